"""The `gecko` command: every config parses, tiny runs end to end, bad keys are named."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gecko_lightning.cli import main as gecko
from gecko_lightning.lightning_cli import run_lightning_cli

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml"))


def test_every_yaml_under_configs_loads():
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert TRAIN_CONFIGS and files
    for path in files:
        assert yaml.safe_load(path.read_text()) is not None, path


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_training_config_parses_with_lightning_cli(config, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as e:
        run_lightning_cli(["fit", "--config", str(config), "--print_config"])
    assert e.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["model_name_or_path"] and printed["data"]["class_path"]


@pytest.mark.parametrize("flag", ["--model.temperatur=0.1", "--model.temprature=0.1"])
def test_unknown_flag_is_rejected(flag, capsys, monkeypatch):
    """No argparse prefix matching either: a sweep's misspelt key must not land on a neighbour."""
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as e:
        run_lightning_cli(["fit", "--config", "configs/tiny.yaml", flag, "--print_config"])
    assert e.value.code != 0
    assert f"unrecognized arguments: {flag}" in capsys.readouterr().err


def test_unknown_yaml_key_is_rejected(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  temprature: 0.1\n")
    with pytest.raises(SystemExit) as e:
        run_lightning_cli(["fit", "--config", "configs/tiny.yaml", "--config", str(bad), "--print_config"])
    assert e.value.code != 0
    assert "does not accept option 'temprature'" in capsys.readouterr().err


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        gecko(["fitt"])
    assert e.value.code == 2 and "unknown command 'fitt'" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_fit_end_to_end(tmp_path):
    """The real entry point, as a user runs it: `python -m gecko_lightning fit --config configs/tiny.yaml`."""
    cmd = [sys.executable, "-m", "gecko_lightning", "fit", "--config", "configs/tiny.yaml",
           f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert ckpts, f"no checkpoint under {tmp_path}"
    import torch

    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 12
    assert state["hyper_parameters"]["matryoshka_dims"] == [32, 16]
