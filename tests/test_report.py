"""`gecko report`: reads offline W&B runs exactly, aggregates cells over seeds, writes the table and the PNG."""

import shutil
import statistics
from pathlib import Path

import pytest

from gecko_lightning import report
from gecko_lightning.data.schema import write_manifest
from gecko_lightning.lightning_cli import run_lightning_cli

REPO = Path(__file__).resolve().parents[1]


def _run(positive, negative, seed, score, **config):
    manifest = {"fret": {"config": {"select": {"positive": positive, "negative": negative}}}}
    return {"config": {"seed_everything": seed, "data_manifest": manifest, **config},
            "summary": {"eval/ndcg_at_10": score, "eval/ndcg_at_10@256": score - 1}, "finished": True}


def test_offline_run_file_is_read_back_exactly(tmp_path, monkeypatch):
    """Reference: what we handed to wandb.init/log ourselves."""
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    run = wandb.init(project="t", dir=str(tmp_path), config={"model": {"temperature": 0.02, "dims": [8, 4]}})
    for step in range(3):
        run.log({"train/loss": 3.0 - step, "eval/ndcg_at_10@8": 10.5 * step})
    run.finish()
    wandb.teardown()  # the W&B service flushes the run file on shutdown
    (got,) = report.offline_runs(tmp_path)
    assert got["finished"] and got["id"] == run.id
    assert got["config"]["model"] == {"temperature": 0.02, "dims": [8, 4]}
    assert got["summary"]["train/loss"] == 1.0 and got["summary"]["eval/ndcg_at_10@8"] == 21.0


def test_cells_are_mean_and_sample_std_over_seeds():
    runs = [_run("llm_top1", "lowest", s, v) for s, v in ((0, 53.1), (1, 53.5), (2, 53.6))]
    runs += [_run("seed", "none", s, v) for s, v in ((0, 52.0), (1, 52.6))]
    metric = report.pick_metric(runs, None)
    assert metric == "eval/ndcg_at_10"  # full width, not the 256-d prefix
    rows = report.aggregate(runs, ["positive", "negative"], metric)
    assert [r["cell"] for r in rows] == [("seed", "none"), ("llm_top1", "lowest")]  # the paper's order
    assert rows[1]["mean"] == pytest.approx((53.1 + 53.5 + 53.6) / 3)
    assert rows[1]["std"] == pytest.approx(statistics.stdev([53.1, 53.5, 53.6]))
    assert rows[0]["seeds"] == ["0", "1"]
    table = report.markdown(rows, ["positive", "negative"], metric)
    assert "| seed | none | 52.30 ± 0.42 | 2 | 0,1 |" in table


def test_a_cell_that_mixes_settings_is_flagged():
    runs = [_run("seed", "none", 0, 50.0, model={"temperature": 0.05}),
            _run("seed", "none", 1, 51.0, model={"temperature": 0.02})]
    rows = report.aggregate(runs, ["positive", "negative"], "eval/ndcg_at_10")
    assert rows[0]["mixed"] == ["model.temperature"]
    assert "seed/none: its runs also differ in model.temperature" in report.markdown(rows, ["positive"], "m")


def test_variant_falls_back_to_the_folder_name():
    config = {"data": {"init_args": {"sources": [{"name": "fret", "path": "data/fret/seed-random"}]}}}
    assert report.fret_variant(config) == ("seed", "random")
    assert report.value_of({"config": config}, "mixture") == "fret"


def test_errors_name_the_problem(tmp_path, capsys):
    assert report.main([str(tmp_path)]) == 2
    assert f"no finished runs under {str(tmp_path)!r}" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"no run logged eval/ndcg_at_10; pass --metric, one of \['train/loss'\]"):
        report.pick_metric([{"summary": {"train/loss": 1.0, "_step": 3}}], None)
    assert report.pick_metric([{"summary": {"eval/ndcg_at_10@16": 1.0, "eval/ndcg_at_10@8": 1.0}}], None).endswith("@16")
    assert report.main(["not/a/dir/at/all"]) == 2
    assert "neither a folder of W&B runs nor an entity/project" in capsys.readouterr().err


def _variant(root: Path, positive: str, negative: str) -> Path:
    """A FRet variant folder: the shipped tiny shard plus a builder-style manifest naming the selection."""
    folder = root / f"fret-{positive}-{negative}".replace("_", "")  # a name the fallback cannot parse
    folder.mkdir(parents=True)
    shutil.copy(REPO / "configs/assets/tiny_fret/shard-00000.jsonl", folder)
    write_manifest(folder, source="fret", positive_ne_seed_rate=0.2,
                   config={"select": {"positive": positive, "negative": negative}})
    return folder


@pytest.mark.slow
def test_report_from_two_tiny_offline_runs(tmp_path, monkeypatch):
    """Two tiny fits (FRet variants seed/none and llm_top1/lowest) with the in-training eval, then the report."""
    import wandb

    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    runs = tmp_path / "runs"
    for i, (pos, neg) in enumerate((("llm_top1", "lowest"), ("seed", "none"))):
        data = _variant(tmp_path / "data", pos, neg)
        try:
            run_lightning_cli(["fit", "--config", "configs/tiny.yaml", "--trainer.max_steps=2", "--trainer.accelerator=cpu",
                               f"--trainer.default_root_dir={runs / str(i)}", f"--data.init_args.path={data}",
                               "--trainer.callbacks+=gecko_lightning.evaluation.callback.RetrievalEvalCallback",
                               "--trainer.callbacks.sts_file=null", "--model.max_length=128"])  # tiny-bert: 128 positions
        finally:
            wandb.finish()
            wandb.teardown()  # stops the W&B service, so the run file is complete before we read it
    assert report.main([str(runs), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "report.md").read_text().splitlines()
    scores = {tuple(report.value_of(r, k) for k in ("positive", "negative")): r["summary"]["eval/ndcg_at_10"]
              for r in report.offline_runs(runs)}
    assert table[0] == "| positive | negative | eval/ndcg_at_10 (mean ± std) | runs | seeds |"
    assert table[2] == f"| seed | none | {scores[('seed', 'none')]:.2f} | 1 | 0 |"
    assert table[3] == f"| llm_top1 | lowest | {scores[('llm_top1', 'lowest')]:.2f} | 1 | 0 |"
    assert len(table) == 4
    png = (tmp_path / "out" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
