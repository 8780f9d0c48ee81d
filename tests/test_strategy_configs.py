"""DeepSpeed presets and launch scripts: parsed by the real CLI here, run on GPUs where there are some.

Here the presets are parsed (layered on configs/tiny.yaml exactly as users layer them); the GPU tests
at the bottom skip cleanly without CUDA or deepspeed. tests/test_deepspeed_cpu.py trains with both
presets on 2 CPU processes.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gecko_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "configs" / "strategy").glob("*.yaml"))
TINY = str(REPO / "configs" / "tiny.yaml")


def print_config(capsys, *argv: str) -> dict:
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", TINY, *argv, "--print_config"])
    assert e.value.code in (0, None), capsys.readouterr().err[-2000:]
    return yaml.safe_load(capsys.readouterr().out)


def test_both_zero_stages_are_shipped():
    assert [p.name for p in PRESETS] == ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_layers_onto_a_run_config(capsys, preset):
    cfg = print_config(capsys, "--config", str(preset))
    trainer, strategy = cfg["trainer"], cfg["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert strategy["init_args"]["stage"] == int(preset.stem[-1])
    assert (trainer["accelerator"], trainer["precision"], trainer["devices"]) == ("gpu", "bf16-mixed", "auto")
    assert cfg["model"]["model_name_or_path"] == "configs/assets/tiny-bert"  # the run config survives
    assert cfg["model"]["gradient_checkpointing"] is False


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (make install: the dev extra)")
def test_printed_preset_config_is_only_yaml_with_deepspeed_logs_on_stderr():
    """In a fresh process without a GPU, importing DeepSpeed (the preset's strategy) logs "Setting
    accelerator to CPU" through a logger that writes to stdout: the line must reach stderr, and stdout
    must stay the YAML a user redirects to a file. In-process tests above see it only when theirs is
    the process's first DeepSpeed import."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run([sys.executable, "-m", "gecko_lightning", "fit", "--config", TINY, "--config", str(PRESETS[0]),
                          "--print_config"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Setting accelerator to CPU" in res.stderr
    cfg = yaml.safe_load(res.stdout)
    assert cfg["trainer"]["strategy"]["init_args"]["stage"] == 2


def test_command_line_overrides_the_preset(capsys):
    cfg = print_config(capsys, "--config", str(PRESETS[0]), "--trainer.num_nodes=4", "--model.grad_cache_chunk_size=64")
    assert cfg["trainer"]["num_nodes"] == 4 and cfg["model"]["grad_cache_chunk_size"] == 64


def test_misspelt_strategy_option_is_rejected(capsys, tmp_path):
    bad = tmp_path / "zero2_typo.yaml"
    text = PRESETS[0].read_text().replace("      stage: 2", "      stag: 2")
    assert "stag: 2" in text
    bad.write_text(text)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", TINY, "--config", str(bad), "--print_config"])
    assert e.value.code != 0 and "stag" in capsys.readouterr().err


def fake_launcher(tmp_path: Path, name: str) -> dict:
    """A stand-in for srun/torchrun that prints its arguments, first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text('#!/usr/bin/env bash\necho "LAUNCH $*"\n')
    exe.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_slurm_script_takes_nodes_and_devices_from_slurm(tmp_path):
    env = fake_launcher(tmp_path, "srun") | dict(SLURM_NNODES="3", SLURM_NTASKS_PER_NODE="4(x3)", SLURM_SUBMIT_DIR=str(REPO))
    out = subprocess.run(["bash", "scripts/slurm_train.sh", "--config", "configs/gecko_base.yaml"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "LAUNCH --kill-on-bad-exit=1 gecko fit --config configs/gecko_base.yaml --trainer.num_nodes=3 --trainer.devices=4" in out


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_slurm_script_outside_slurm_says_how_to_run_it(tmp_path):
    env = {k: v for k, v in fake_launcher(tmp_path, "srun").items() if not k.startswith("SLURM_")}
    res = subprocess.run(["bash", "scripts/slurm_train.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "run this with sbatch (SLURM_NNODES is unset)" in res.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_torchrun_script_passes_the_node_layout(tmp_path):
    env = fake_launcher(tmp_path, "torchrun") | dict(NNODES="2", NODE_RANK="1", NPROC_PER_NODE="8", MASTER_ADDR="10.0.0.1")
    out = subprocess.run(["bash", "scripts/torchrun_train.sh", "--config", "x.yaml"], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "--nnodes=2 --node_rank=1 --nproc_per_node=8 --master_addr=10.0.0.1" in out
    assert out.strip().endswith("-m gecko_lightning fit --config x.yaml --trainer.num_nodes=2 --trainer.devices=8")


# ---- GPU only: DeepSpeed runs. `python -m pytest -m gpu tests/test_strategy_configs.py` on a CUDA machine.

needs_deepspeed = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("deepspeed") is None,
    reason="DeepSpeed runs need a CUDA GPU and `pip install deepspeed`",
)


@pytest.mark.gpu
@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("chunk", [0, 4])
def test_deepspeed_preset_trains_with_and_without_grad_cache(tmp_path, preset, chunk):
    cmd = [sys.executable, "-m", "gecko_lightning", "fit", "--config", TINY, "--config", str(preset),
           "--trainer.devices=1", "--trainer.max_steps=4", "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path}"]
    if chunk:
        cmd.append(f"--model.grad_cache_chunk_size={chunk}")
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    assert list(tmp_path.rglob("*.ckpt")), "no checkpoint written"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_grad_cache_matches_plain_under_cuda_bf16_autocast(tiny_bert):
    """On CUDA the replay restores the CUDA generator and the bf16 autocast state of the first pass."""
    from test_grad_cache import chunked_with_graph, grads, make_batch, make_module

    module = make_module(tiny_bert, 3).float().cuda()
    batch = {k: ({f: t.cuda() for f, t in v.items()} if isinstance(v, dict) else v.cuda()) for k, v in make_batch(module).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        torch.manual_seed(3)
        embs = [chunked_with_graph(module, batch[k], 3) for k in ("query", "positive", "negative")]
        module.compute_loss(*embs, batch).backward()
    want = grads(module)
    module.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        torch.manual_seed(3)
        loss = module.grad_cache_step(batch)
    loss.backward()  # outside autocast, as Lightning runs backward
    got = grads(module)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=2e-2, atol=1e-4, msg=name)
