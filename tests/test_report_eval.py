"""`gecko report` on `gecko eval --output` files: base against variants, mean ± std over seeds, Δ, table and PNG."""

import json
import os
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from gecko_lightning import report
from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.evaluation import cli as eval_cli
from gecko_lightning.report_evals import group, read_eval, summarize

REPO = Path(__file__).resolve().parents[1]

BASE = {"scifact": {"ndcg_at_10": 78.49, "mrr_at_10": 75.93}, "sts-test.csv": {"spearman": 82.03}}
# variant -> per seed: (nDCG@10, MRR@10, Spearman); picked by hand, not by any code under test
SCORES = {"llm_top1": [(78.79, 76.07, 81.80), (78.95, 76.20, 81.81), (78.94, 76.31, 81.79)],
          "seed": [(78.94, 76.50, 81.83), (78.91, 76.02, 81.82), (78.80, 75.98, 81.84)]}


def _write(path: Path, labels: dict, prompts: str, scores: dict) -> Path:
    """An eval output as the documented format spells it (docs/eval.md), written by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"_meta": {"labels": labels, "prompts": prompts, "model": "m"}, **scores}, indent=2))
    return path


@pytest.fixture
def runs(tmp_path) -> Path:
    """base.json and, per variant and seed, a retrieval file (Gecko prompts) and an STS file (no prompts)."""
    _write(tmp_path / "base.json", {"variant": "base"}, "none", BASE)
    for variant, per_seed in SCORES.items():
        for seed, (ndcg, mrr, rho) in enumerate(per_seed):
            labels = {"variant": variant, "seed": str(seed)}
            folder = tmp_path / "seeds" / f"{variant}-seed{seed}"
            _write(folder / "scores.json", labels, "gecko", {"scifact": {"ndcg_at_10": ndcg, "mrr_at_10": mrr}})
            _write(folder / "scores_sts_none.json", labels, "none", {"sts-test.csv": {"spearman": rho}})
    (tmp_path / "seeds" / "manifest.json").write_text('{"records": 3}')  # not an eval output: skipped in a folder
    return tmp_path


def _table(text: str) -> dict[tuple[str, str], dict[str, str]]:
    """(dataset, metric) -> {column header: cell} of the report's Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return {(r["dataset"], r["metric"]): r for r in rows}


def test_table_is_mean_and_sample_std_over_seeds_against_the_base(runs, capsys):
    out = runs / "report" / "summary.md"
    assert report.main([str(runs / "base.json"), str(runs / "seeds"), "--output", str(out)]) == 0
    table = _table(out.read_text())
    assert table == _table(capsys.readouterr().out)  # the file holds what was printed
    for i, (dataset, metric) in enumerate([("scifact", "ndcg_at_10"), ("scifact", "mrr_at_10"), ("sts-test.csv", "spearman")]):
        row = table[dataset, metric]
        assert row["base"] == f"{BASE[dataset][metric]:.2f}"
        for variant, per_seed in SCORES.items():
            xs = [s[i] for s in per_seed]
            assert row[f"{variant} (3 seeds)"] == f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"
            assert row[f"Δ {variant}"] == f"{statistics.mean(xs) - BASE[dataset][metric]:+.2f}"
    assert table["scifact", "ndcg_at_10"]["prompts"] == "none / gecko / gecko"  # base, llm_top1, seed
    assert table["sts-test.csv", "spearman"]["prompts"] == "none"
    assert list(table) == [("scifact", "ndcg_at_10"), ("scifact", "mrr_at_10"), ("sts-test.csv", "spearman")]


def test_summary_numbers_equal_statistics(runs):
    """The unrounded numbers behind the table, to the last bit."""
    cells = group([read_eval(p) for p in sorted(runs.rglob("*.json")) if p.name != "manifest.json"], ["variant"])
    columns, _, stats = summarize(cells, "base")
    assert columns == [("base",), ("llm_top1",), ("seed",)]
    xs = [s[0] for s in SCORES["seed"]]
    got = stats[("scifact", "ndcg_at_10"), ("seed",)]
    assert got["mean"] == pytest.approx(statistics.mean(xs), abs=1e-12)
    assert got["std"] == pytest.approx(statistics.stdev(xs), abs=1e-12)
    assert stats[("sts-test.csv", "spearman"), ("base",)]["std"] is None  # one run: no spread


def test_png_is_written_beside_the_table(runs):
    out = runs / "results.md"
    assert report.main([str(runs / "base.json"), str(runs / "seeds" / "*" / "*.json"), "--output", str(out)]) == 0
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR" and png.endswith(b"IEND\xaeB`\x82")
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(out.with_suffix(".png")).shape
    assert width > 300 and height > 200


def _error(argv: list[str], capsys) -> str:
    assert report.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gecko report: error: "), err
    return err


def test_bad_input_is_a_one_line_error(runs, tmp_path, capsys):
    not_eval = tmp_path / "config.json"
    not_eval.write_text('{"hidden_size": 384}')
    assert "config.json: 'hidden_size' maps to 384, not to {metric: score}" in _error([str(not_eval)], capsys)
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "list.json: holds a JSON list, not a `gecko eval --output` file" in _error([str(tmp_path / "list.json")], capsys)
    (tmp_path / "empty").mkdir()
    assert f"no finished runs under {str(tmp_path / 'empty')!r}: it holds neither" in _error([str(tmp_path / "empty")], capsys)
    old = tmp_path / "old.json"  # an eval output from before labels
    old.write_text(json.dumps(BASE))
    assert "old.json: has no labels, so its variant is unknown; re-run gecko eval with --label variant=NAME" in _error(
        [str(old)], capsys)
    twice = _write(tmp_path / "again.json", {"variant": "seed", "seed": "1"}, "gecko", {"scifact": {"ndcg_at_10": 1.0}})
    err = _error([str(runs / "seeds"), str(twice)], capsys)
    assert "scifact/ndcg_at_10 of seed seed 1 is in both" in err and "again.json" in err
    assert "no 'tag' label to group by (--by tag)" in _error([str(runs / "base.json"), "--by", "tag"], capsys)
    assert "matches no file" in _error([str(tmp_path / "nowhere" / "*.json")], capsys)


def test_gecko_eval_labels_reach_the_report(tmp_path, capsys, one_thread):
    """The real writer: `gecko eval --label` on a tiny random model, then `gecko report` on its files."""
    torch.manual_seed(0)
    model = tmp_path / "model"
    GeckoEncoder.from_pretrained(REPO / "configs/assets/tiny-bert", random_init=True, max_length=32).save_pretrained(model)
    sts = str(REPO / "configs/assets/tiny_eval/sts.tsv")
    for variant in ("base", "tuned"):
        assert eval_cli.main(["--model", str(model), "--sts", sts, "--prompts", "none", "--label", f"variant={variant}",
                              "--output", str(tmp_path / f"{variant}.json")]) == 0
    rho = json.loads((tmp_path / "base.json").read_text())["sts.tsv"]["spearman"]
    capsys.readouterr()
    assert report.main([str(tmp_path / "base.json"), str(tmp_path / "tuned.json")]) == 0
    assert f"| sts.tsv | spearman | none | {rho:.2f} | {rho:.2f} | +0.00 |" in capsys.readouterr().out  # same model


def test_a_bad_label_fails_before_the_model_loads(capsys):
    assert eval_cli.main(["--model", "no/such/model", "--sts", "x.tsv", "--label", "variant"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--label 'variant': expected KEY=VALUE" in err


def test_demo_scripts_call_gecko_report():
    scripts = [REPO / "scripts" / "demo.sh", REPO / "scripts" / "demo_seeds.sh"]
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)  # parses
        text = script.read_text()
        assert "demo_report.py" not in text and "demo_summary.py" not in text
        assert "gecko report " in text and "--label variant=" in text
    assert not (REPO / "scripts" / "demo_report.py").exists() and not (REPO / "scripts" / "demo_summary.py").exists()



def test_the_llm_labelled_split_is_its_own_row_with_a_note(runs, capsys):
    """`--label qrels=llm` names the datasets of its file, not a run: same cell as the file's variant, no mixing hint."""
    _write(runs / "base_split.json", {"variant": "base", "qrels": "llm"}, "none", {"test": {"ndcg_at_10": 60.0}})
    for seed, ndcg in enumerate((61.0, 64.0, 63.0)):
        _write(runs / "seeds" / f"split{seed}.json", {"variant": "seed", "seed": str(seed), "qrels": "llm"}, "gecko",
               {"test": {"ndcg_at_10": ndcg}})
    assert report.main([str(runs / "base.json"), str(runs / "base_split.json"), str(runs / "seeds")]) == 0
    text = capsys.readouterr().out
    row = _table(text)["test (qrels: llm)", "ndcg_at_10"]
    assert row["base"] == "60.00" and row["Δ seed"] == f"{statistics.mean([61.0, 64.0, 63.0]) - 60.0:+.2f}"
    assert _table(text)["scifact", "ndcg_at_10"]["base"] == "78.49"  # the human-labelled rows are untouched
    assert "come from the build's LLM, not from people" in text and "add to --by" not in text


# A finished build's manifest as runner.py writes it, trimmed to what the cost table reads; figures by hand.
BUILD = {"source": "fret", "records": 125, "wall_time_s": {"generate": 150.0, "retrieve": 30.0, "rerank": 240.0, "select": 0.1,
                                                            "export": 0.5},
         "stages": {"generate": {"llm_load_s": 12.0}}, "llm_calls": {"generate": 200, "rerank": 600},
         "cache_hits": {"generate": 0, "rerank": 24},
         "test_split": {"fraction": 0.2, "relevance": "graded", "rule": "2: the seed", "queries": 31, "qrels": 33,
                        "training_records_dropped": {"query_in_test": 1, "positive_relevant_to_test": 2}}}


def test_build_cost_follows_the_table(runs, tmp_path, capsys):
    from gecko_lightning.data.schema import MANIFEST, SCHEMA_VERSION

    build = tmp_path / "fret"
    build.mkdir()
    (build / MANIFEST).write_text(json.dumps({"schema_version": SCHEMA_VERSION, **BUILD}))
    assert report.main([str(runs / "base.json"), str(runs / "seeds"), "--build", str(build)]) == 0
    text = capsys.readouterr().out
    cost = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]] for line in text.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in ("generate", "rerank", "select", "total")}
    assert cost["generate"] == ["2.7", "200", "0"]  # (150 s + 12 s model load) / 60
    assert cost["rerank"] == ["4.0", "600", "24"] and cost["select"] == ["0.0", "0", "0"]
    assert cost["total"] == [f"{(150 + 12 + 30 + 240 + 0.1 + 0.5) / 60:.1f}", "800", "24"]
    assert "Training records: 125." in text and "31 queries (20% of the seeds)" in text
    assert "1 with a test query, 2 with a positive relevant to one" in text
    assert "--build" in _error([str(runs / "base.json"), "--build", str(tmp_path / "nowhere")], capsys)
    # a query-log build (corpus.queries, no generated seeds) holds out given queries, and says so
    log = {**BUILD, "counts": {"generate": {"given_queries": 296, "seeds": 0}}}
    (build / MANIFEST).write_text(json.dumps({"schema_version": SCHEMA_VERSION, **log}))
    assert report.main([str(runs / "base.json"), "--build", str(build)]) == 0
    assert "31 queries (20% of the given queries)" in capsys.readouterr().out


@pytest.mark.parametrize("env, beir", [({}, "configs/assets/demo/scifact|configs/assets/wikiqa"),
                                       ({"CORPUS": "my.jsonl"}, "|"),
                                       ({"CORPUS": "my.jsonl", "BEIR": "mine"}, "mine|")])
def test_the_demo_needs_no_beir_folder_for_a_corpus_of_ones_own(env, beir):
    """CORPUS alone: no human set, the build's own test split only; BEIR given: both (scripts/demo_env.sh)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("CORPUS", "BEIR", "SECOND_BEIR")}
    got = subprocess.run(["bash", "-c", 'source scripts/demo_env.sh; echo "$BEIR|$SECOND_BEIR"'], cwd=REPO,
                         env={**clean, **env}, capture_output=True, text=True, check=True).stdout.strip()
    assert got == beir
    text = (REPO / "scripts" / "demo.sh").read_text()
    assert '--corpus.path="$CORPUS"' in text and "--label qrels=llm" in text and '--build "$OUT/fret"' in text


def test_plot_draws_each_variant_against_zero(runs):
    """The plotted bars are the variant's mean minus the base's, with the seeds' sample std, per run too."""
    from gecko_lightning.report_evals import deltas

    cells = group([read_eval(p) for p in sorted(runs.rglob("*.json")) if p.name != "manifest.json"], ["variant"])
    got = deltas(cells, "base")
    assert list(got) == [("scifact", "ndcg_at_10"), ("sts-test.csv", "spearman")]  # each dataset's headline
    for i, row in [(0, ("scifact", "ndcg_at_10")), (2, ("sts-test.csv", "spearman"))]:
        ref = BASE[row[0]][row[1]]
        for variant, per_seed in SCORES.items():
            xs = [s[i] for s in per_seed]
            bar = got[row][(variant,)]
            assert bar["mean"] == pytest.approx(sum(xs) / 3 - ref, abs=1e-9)
            assert bar["std"] == pytest.approx(statistics.stdev(xs), abs=1e-12)
            assert bar["values"] == pytest.approx([x - ref for x in xs], abs=1e-9)
    assert deltas(cells, "nobody") == {}  # no base cell: the plot shows the scores themselves


def test_the_demo_refuses_an_unknown_ft_prompts_before_building(tmp_path):
    """FT_PROMPTS picks how the tuned model is scored (none, gecko, both): a typo fails in one line, exit 2,
    before the 8-minute build (nothing is written under OUT)."""
    env = {**os.environ, "FT_PROMPTS": "geko", "OUT": str(tmp_path / "out")}
    got = subprocess.run(["bash", "scripts/demo.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert got.returncode == 2 and got.stderr == "FT_PROMPTS=geko: expected none, gecko or both\n"
    assert not (tmp_path / "out").exists()
