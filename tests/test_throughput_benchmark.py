"""benchmarks/throughput.py runs end to end on CPU with the tiny model (figures are not checked:
timings live in docs/benchmarks.md, never in tests)."""

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("throughput_benchmark", REPO / "benchmarks" / "throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="the peer needs sentence-transformers")
def test_cpu_tiny_run_prints_every_mode_and_the_ratio(capsys, tmp_path):
    bench = load_benchmark()
    args = ["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "0", "--rounds", "1", "--batch-size", "4",
            "--cache-batch", "8", "--cache-chunk", "4", "--json", str(tmp_path / "figures.json")]
    assert bench.main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[2] for line in lines if line.startswith("round 1")] == ["ours", "peer", "ours-cached"]
    assert any(line.startswith("padding ratio (padded positions / real tokens, B=4, max_length 128): ") for line in lines)
    assert lines[-1].startswith("ratio ours/peer: ") and float(lines[-1].split(": ")[1]) > 0
    assert (tmp_path / "figures.json").is_file()


def test_unknown_mode_is_named():
    bench = load_benchmark()
    with pytest.raises(SystemExit, match=r"unknown --modes \['theirs'\]; choose from ours, peer, ours-cached, peer-cached"):
        bench.build(bench.parse_args(["--device", "cpu", "--tiny", "--modes", "ours,theirs"]), None, None)


def test_real_token_count_ignores_padding():
    bench = load_benchmark()
    src = bench.Source(["a", "b", "c"], tokens=[3, 5, 7], plan=[[0, 1], [2, 0]])
    assert next(src) == ["a", "b"] and src.consumed == 8
    assert next(src) == ["c", "a"] and src.consumed == 18
    assert next(src) == ["a", "b"] and src.consumed == 26  # the plan repeats


def test_padding_ratio_against_hand_counts():
    bench = load_benchmark()
    sides = [[2, 4, 3, 3], [5, 1, 1, 5]]  # tokens of row 0..3 on two sides
    # batch [0, 1]: 2 x 4 + 2 x 5 = 18 positions; batch [2, 3]: 2 x 3 + 2 x 5 = 16; real 24
    assert bench.padding_ratio([[0, 1], [2, 3]], sides) == pytest.approx(34 / 24)
    assert bench.padding_ratio([[0, 3], [1, 2]], sides) == pytest.approx((2 * 3 + 2 * 5 + 2 * 4 + 2 * 1) / 24)


def test_length_grouped_plan_pads_less_on_the_benchmark_texts():
    bench = load_benchmark()
    triples = bench.make_triples(256, seed=0)
    chars = [[len(e.query) for e in triples], [len(e.positive) for e in triples], [len(e.negative) for e in triples]]
    plain, grouped = (bench.padding_ratio(bench.batch_plan(triples, 16, k, 0), chars) for k in (0, 16))
    assert sorted(i for b in bench.batch_plan(triples, 16, 16, 0) for i in b) == list(range(256))
    assert grouped < plain


def test_padding_only_prints_both_ratios_without_a_model(capsys):
    bench = load_benchmark()
    assert bench.main(["--device", "cpu", "--tiny", "--padding-only", "--batch-size", "4", "--group-by-length", "4"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("padding ratio (padded positions / real tokens, B=4, max_length 128): ")
    figures = re.findall(r"(\d+\.\d{3}) with group_by_length (\d+)", line)
    assert [k for _, k in figures] == ["0", "4"] and all(float(r) >= 1 for r, _ in figures)
