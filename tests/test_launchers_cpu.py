"""The multi-node launchers on one CPU machine: `scripts/torchrun_train.sh` as two "nodes" (NODE_RANK
0 and 1, one process each) and `scripts/slurm_train.sh` under a simulated SLURM allocation (2 nodes
x 1 task, `tests/fixtures/slurm/srun` standing in for srun) train exactly as 2 DDP processes on one
node: same per-step losses and final weights as `gecko fit --trainer.devices=2`, same seed, gloo."""

import csv
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # gecko and torchrun live beside this python
FIT = ["--config", "configs/tiny.yaml", "--trainer.accelerator=cpu", "--trainer.strategy=ddp", "--trainer.max_steps=4",
       "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
       "--trainer.logger=lightning.pytorch.loggers.CSVLogger"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "gecko").exists() or not (BIN / "torchrun").exists(), reason="needs gecko and torchrun in the venv"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra) -> dict:
    base = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    # A CI runner may itself sit inside a SLURM job or torchrun; only the variables set here may count.
    base = {k: v for k, v in base.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "GROUP_", "LOCAL_", "RANK", "WORLD_"))}
    return base | extra


def fit_args(root: Path) -> list[str]:
    return FIT + [f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}"]


def check(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]


def start(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def result(root: Path) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Rank 0's train/loss at every step, and the weights of the one checkpoint."""
    (metrics,) = root.rglob("metrics.csv")
    losses = [float(r["train/loss"]) for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    (ckpt,) = root.rglob("*.ckpt")
    return losses, torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_run(got: Path, want: Path) -> None:
    got_losses, got_weights = result(got)
    want_losses, want_weights = result(want)
    assert len(want_losses) == 4
    torch.testing.assert_close(torch.tensor(got_losses), torch.tensor(want_losses), rtol=0, atol=1e-6)
    assert got_weights.keys() == want_weights.keys()
    for name, w in want_weights.items():
        torch.testing.assert_close(got_weights[name], w, rtol=0, atol=1e-6, msg=f"final weight {name}")


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> Path:
    """The reference: 2 DDP processes on one node, started by Lightning itself."""
    root = tmp_path_factory.mktemp("one_node")
    check([start([str(BIN / "gecko"), "fit", *fit_args(root), "--trainer.devices=2"], env=env())])
    return root


def test_torchrun_two_nodes_equal_one_node_with_two_processes(one_node, tmp_path):
    shared = env(NNODES="2", NPROC_PER_NODE="1")
    nodes = [start(["bash", "scripts/torchrun_train.sh", *fit_args(tmp_path)], env=shared | {"NODE_RANK": str(r)}) for r in (0, 1)]
    check(nodes)
    assert_same_run(tmp_path, one_node)


def test_slurm_two_nodes_equal_one_node_with_two_processes(one_node, tmp_path):
    slurm = env(SLURM_NNODES="2", SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_JOB_NAME="gecko", SLURM_JOB_ID="4242",
                SLURM_SUBMIT_DIR=str(REPO), SLURM_CPUS_PER_TASK="1")
    slurm["PATH"] = f"{REPO / 'tests' / 'fixtures' / 'slurm'}{os.pathsep}{slurm['PATH']}"
    assert shutil.which("srun", path=slurm["PATH"]).startswith(str(REPO))
    check([start(["bash", "scripts/slurm_train.sh", *fit_args(tmp_path)], env=slurm)])
    assert_same_run(tmp_path, one_node)
