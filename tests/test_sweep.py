"""sweep.yaml: every value reaches LightningCLI as W&B would pass it; the offline runner expands and runs it."""

import json
import math
import random
from pathlib import Path

import pytest
import yaml

from gecko_lightning import report, sweep
from gecko_lightning.lightning_cli import normalize_argv, run_lightning_cli

REPO = Path(__file__).resolve().parents[1]
SPEC = sweep.load_sweep(REPO / "sweep.yaml")
BASE = SPEC["command"][SPEC["command"].index("--config") + 1]
CASES = [(key, value) for key, p in SPEC["parameters"].items() for value in p.get("values", [p.get("value")])]


def _dotted(tree: dict, key: str):
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_sweep_file_is_a_valid_wandb_sweep():
    assert SPEC["method"] in ("grid", "random", "bayes")
    assert SPEC["metric"]["goal"] == "maximize" and SPEC["metric"]["name"].startswith("eval/ndcg_at_10")
    assert SPEC["early_terminate"]["type"] == "hyperband"
    assert SPEC["command"][:2] == ["gecko", "fit"] and "${args}" in SPEC["command"]
    assert (REPO / BASE).is_file()


@pytest.mark.parametrize("key,value", CASES, ids=[f"{k}={v}"[:60] for k, v in CASES])
def test_every_sweep_value_is_accepted_by_lightning_cli(key, value, capsys, monkeypatch):
    """Exactly the string a W&B agent builds (`--key=str(value)`) must parse and land on that key."""
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as e:
        run_lightning_cli(["fit", "--config", BASE, *sweep.to_args({key: value}), "--print_config"])
    out = capsys.readouterr()
    assert e.value.code in (0, None), out.err[-2000:]
    printed = _dotted(yaml.safe_load(out.out), key)
    if isinstance(value, list) and value and isinstance(value[0], dict):  # SourceConfigs print every field
        assert [{k: p[k] for k in v} for p, v in zip(printed, value)] == value
    else:
        assert printed == value


def test_wandb_none_becomes_null_and_whole_sections_go_first():
    argv = ["fit", "--config", "a.yaml", "--model.projection_dim=None", "--data=mix.yaml", "--data.init_args.seed=1"]
    assert normalize_argv(argv) == [
        "fit", "--config", "a.yaml", "--data=mix.yaml", "--model.projection_dim=null", "--data.init_args.seed=1"
    ]


def test_grid_is_the_product_in_file_order():
    params = {"a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]}, "c": {"value": 0}}
    runs = sweep.expand(params, "grid", None)
    assert len(runs) == 2 * 3 and runs[0] == {"a": 1, "b": "x", "c": 0} and runs[-1] == {"a": 2, "b": "z", "c": 0}
    assert sweep.expand(params, "grid", 4) == runs[:4]


def test_random_draws_are_seeded_and_in_range():
    params = {"lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-3}, "bs": {"values": [8, 16]},
              "n": {"distribution": "int_uniform", "min": 2, "max": 4}}
    runs = sweep.expand(params, "random", 50, seed=3)
    assert runs == sweep.expand(params, "random", 50, seed=3)
    assert all(1e-5 <= r["lr"] <= 1e-3 and r["bs"] in (8, 16) and r["n"] in (2, 3, 4) for r in runs)
    # independent reference: the same draws from a fresh generator, in key order
    rng = random.Random(3)
    lr = math.exp(rng.uniform(math.log(1e-5), math.log(1e-3)))
    assert runs[0] == {"lr": lr, "bs": rng.choice([8, 16]), "n": rng.randint(2, 4)}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"--only \['model.temperatur'\] not in"):
        sweep.select(SPEC["parameters"], ["model.temperatur"])
    with pytest.raises(ValueError, match="a grid needs `values`"):
        sweep.grid({"lr": {"distribution": "uniform", "min": 0, "max": 1}})
    with pytest.raises(ValueError, match="bayes needs the W&B server"):
        sweep.expand({"a": {"values": [1]}}, "bayes", 2)
    with pytest.raises(FileNotFoundError, match="sweep file 'nope.yaml' does not exist"):
        sweep.load_sweep("nope.yaml")


def test_without_offline_it_points_to_wandb(capsys):
    assert sweep.main(["sweep.yaml"]) == 2
    assert "wandb agent" in capsys.readouterr().err


def test_slurm_script_runs_one_draw_per_array_task(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    argv = [str(REPO / "sweep.yaml"), "--offline", "--count", "5", "--seed", "7", "--out", str(tmp_path), "--slurm",
            "--", "--trainer.max_steps=10"]
    assert sweep.main(argv) == 0
    script = (tmp_path / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0-4" in script
    assert '--index "$SLURM_ARRAY_TASK_ID" -- --trainer.max_steps=10' in script
    assert "--slurm" not in script.split("#SBATCH --gpus-per-task=1")[1]


@pytest.mark.slow
def test_two_run_offline_sweep_on_tiny(tmp_path, monkeypatch):
    """The real path: `gecko sweep` runs two `gecko fit` processes on configs/tiny.yaml, each logged offline."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    argv = ["sweep.yaml", "--offline", "--method", "grid", "--count", "2", "--only", "model.hard_negatives",
            "--base-config", "configs/tiny.yaml", "--out", str(tmp_path), "--", "--trainer.max_steps=3",
            "--trainer.accelerator=cpu"]
    assert sweep.main(argv) == 0
    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["params"] for r in runs] == [{"model.hard_negatives": "own"}, {"model.hard_negatives": "all"}]
    assert all(r["returncode"] == 0 for r in runs)
    for i, want in enumerate(["own", "all"]):
        saved = yaml.safe_load((tmp_path / f"run-{i:03d}" / "config.yaml").read_text())
        assert saved["model"]["hard_negatives"] == want
        assert len(list((tmp_path / f"run-{i:03d}" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1
    # ...and the report groups the two finished runs by the swept key.
    assert report.main([str(tmp_path), "--by", "model.hard_negatives", "--metric", "train/loss"]) == 0
    rows = (tmp_path / "report.md").read_text().splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == ["| all", "| own"] and (tmp_path / "report.png").is_file()
