"""benchmarks/throughput.py runs end to end on CPU with the tiny model (figures are not checked:
timings live in docs/benchmarks.md, never in tests)."""

import importlib.util
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
    assert lines[-1].startswith("ratio ours/peer: ") and float(lines[-1].split(": ")[1]) > 0
    assert (tmp_path / "figures.json").is_file()


def test_unknown_mode_is_named():
    bench = load_benchmark()
    with pytest.raises(SystemExit, match=r"unknown --modes \['theirs'\]; choose from ours, peer, ours-cached, peer-cached"):
        bench.build(bench.parse_args(["--device", "cpu", "--tiny", "--modes", "ours,theirs"]), None, None)


def test_real_token_count_ignores_padding():
    bench = load_benchmark()
    src = bench.Source(["a", "b", "c"], tokens=[3, 5, 7], batch=2)
    assert next(src) == ["a", "b"] and src.consumed == 8
    assert next(src) == ["c", "a"] and src.consumed == 18  # wraps around in a fixed order
