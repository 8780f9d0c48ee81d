"""The `gecko` command: every config parses, tiny runs end to end, bad keys are named."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gecko_lightning.cli import LIGHTNING_COMMANDS, SUBCOMMANDS
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
    out = capsys.readouterr().out
    printed = yaml.safe_load(out)
    assert printed["model"]["model_name_or_path"] and printed["data"]["class_path"]
    assert "${" not in out  # every interpolation resolved


def test_interpolated_lengths_follow_a_command_line_override(capsys, monkeypatch):
    """configs/demo.yaml derives doc_max_length from model.max_length; a flag must reach both (omegaconf+)."""
    monkeypatch.chdir(REPO)
    assert "${model.max_length}" in (REPO / "configs" / "demo.yaml").read_text()
    for flags, expected in [([], 256), (["--model.max_length=128"], 128)]:
        with pytest.raises(SystemExit):
            run_lightning_cli(["fit", "--config", "configs/demo.yaml", *flags, "--print_config"])
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["max_length"] == printed["data"]["init_args"]["doc_max_length"] == expected


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


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """`gecko ARGV` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        gecko(list(argv))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_help_lists_every_command_with_one_line_on_what_it_does(capsys):
    code, out, _ = run(capsys, "--help")
    rows = {line.split()[0]: line.split(None, 1)[1:] for line in out.split("commands:\n")[1].split("\n\n")[0].splitlines()}
    assert code == 0 and out.startswith("usage: gecko <command> [<args>]\n")
    assert set(rows) == {*LIGHTNING_COMMANDS, *SUBCOMMANDS}
    assert all(rows.values()), [name for name, line in rows.items() if not line]  # a new command needs its line
    assert rows["build"] == ["build FRet training data from a corpus with an LLM (gecko build fret)"]
    assert run(capsys)[0] == 2 and run(capsys)[2] == out  # no command: the same help on stderr


# Every command, and every subcommand with flags of its own (`gecko data chunk`, `gecko eval rerank`, ...).
HELP = [["fit"], ["validate"], ["test"], ["predict"], ["data"], ["data", "validate"], ["data", "convert"],
        ["data", "chunk"], ["build"], ["build", "fret"], ["eval"], ["eval", "rerank"], ["export"], ["sweep"],
        ["report"], ["sync"]]


def test_help_covers_every_command():
    assert {argv[0] for argv in HELP} == {*LIGHTNING_COMMANDS, *SUBCOMMANDS}


@pytest.mark.parametrize("argv", HELP, ids=" ".join)
def test_every_command_help_exits_0(argv, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code, out, err = run(capsys, *argv, "--help")
    # LightningCLI names the program after sys.argv[0]: `gecko` from a shell, pytest's here
    usage = re.compile(rf"usage: \S+ \[options\] {argv[0]} " if argv[0] in LIGHTNING_COMMANDS else f"usage: gecko {' '.join(argv)}")
    assert code in (0, None) and usage.match(out), (out[:500], err[-2000:])


@pytest.mark.parametrize("typo, nearest", [("fitt", "fit"), ("exprot", "export"), ("evl", "eval"), ("bulid", "build")])
def test_an_unknown_command_names_the_nearest_one(typo, nearest, capsys):
    code, out, err = run(capsys, typo)
    assert (code, out) == (2, "")
    assert err == f"gecko: error: unknown command {typo!r}; did you mean {nearest!r}? (gecko --help says what each does)\n"


def test_an_unknown_command_with_no_near_one_lists_them_all(capsys):
    code, _, err = run(capsys, "xyzzy")
    assert code == 2 and err.startswith("gecko: error: unknown command 'xyzzy'; the commands are data, build, fit, ")
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_tiny_fit_end_to_end(tmp_path):
    """The real entry point, as a user runs it: `python -m gecko_lightning fit --config configs/tiny.yaml`."""
    cmd = [sys.executable, "-m", "gecko_lightning", "fit", "--config", "configs/tiny.yaml",
           f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "💡" not in run.stdout + run.stderr  # Lightning's litlogger / litmodels adverts are dropped
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert ckpts, f"no checkpoint under {tmp_path}"
    import torch

    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert state["global_step"] == 12
    assert state["hyper_parameters"]["matryoshka_dims"] == [32, 16]


USER_ERRORS = [
    ("--model.temperature=0", "model.temperature must be > 0, got 0.0; the paper's default is 0.05"),
    ("--model.matryoshka_dims=[64]", "matryoshka dim 64 exceeds the embedding dimension 32 of configs/assets/tiny-bert"),
    ("--model.model_name_or_path=configs/assets/no-such-bert", "model folder 'configs/assets/no-such-bert' does not exist"),
    ("--data.init_args.batch_size=0", "batch_size must be >= 1, got 0"),
    ("--data.init_args.batch_size=1000", "96 records make no full global batch of 1000"),
    ("--data.init_args.path=configs/assets/no_such_data", "dataset path 'configs/assets/no_such_data' does not exist"),
]


@pytest.mark.parametrize("flag, message", USER_ERRORS, ids=[f for f, _ in USER_ERRORS])
def test_user_error_is_one_line_and_exit_2(flag, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("GECKO_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        gecko(["fit", "--config", "configs/tiny.yaml", "--trainer.logger=false", "--trainer.max_steps=1", flag])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert e.value.code == 2
    assert last.startswith("gecko fit: error: ") and message in last, err[-2000:]
    assert "Traceback" not in err


def test_user_error_from_a_shell_has_no_traceback_unless_gecko_debug(tmp_path):
    cmd = [sys.executable, "-m", "gecko_lightning", "fit", "--config", "configs/tiny.yaml", "--trainer.logger=false",
           "--model.temperature=0"]
    env = {k: v for k, v in os.environ.items() if k != "GECKO_DEBUG"}
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert run.stderr.strip().splitlines()[-1] == (
        "gecko fit: error: model.temperature must be > 0, got 0.0; the paper's default is 0.05"
    )
    debug = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env={**env, "GECKO_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only UserError is shortened: any other exception is a bug and raises as it is."""
    import gecko_lightning.data.cli as data_cli

    monkeypatch.setattr(data_cli, "main", lambda argv: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        gecko(["data", "validate", "x"])
