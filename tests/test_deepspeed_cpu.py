"""The DeepSpeed path, run for real: `gecko fit` under ZeRO-2 and ZeRO-3 on 2 CPU processes (gloo).

Each run is the documented command, `gecko fit --config configs/tiny.yaml --config
configs/strategy/deepspeed_zero<N>.yaml`, with only the accelerator and the strategy class swapped
(`tests/cpu_deepspeed.py`: Lightning's strategy refuses CPU) and the precision set to 32: bf16-mixed
also trains on CPU, but its rounding (~1e-2 relative) would hide the errors these tests look for.
The reference is the same run under Lightning's DDP, whose parity with one process on the
concatenated batch `tests/test_ddp_cpu.py` proves. Checked, for Eq. 3 with the cross-rank gather,
hard negatives, same-tower terms and Matryoshka [32, 16] (configs/tiny.yaml):

- ZeRO-2 and ZeRO-3 end at DDP's weights, without and with GradCache (`model.grad_cache_chunk_size`);
- DeepSpeed's own merge (`convert_zero_checkpoint_to_fp32_state_dict`) of the 2-rank checkpoint
  folders, then `gecko export DIR` and `gecko eval --model DIR`, give the DDP model's vectors;
- a ZeRO-2 run killed after a checkpoint resumes from its folder on the uninterrupted run's batches
  and weights.

The backbone has dropout off: on resume every rank restores rank 0's random state (docs/scaling.md,
"Resuming"), so with dropout a resumed multi-process run is equal only in distribution. GradCache's
dropout replay is checked in tests/test_grad_cache.py and tests/test_ddp_cpu.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRESET = {2: "configs/strategy/deepspeed_zero2.yaml", 3: "configs/strategy/deepspeed_zero3.yaml"}
STEPS, SAVE_EVERY, CRASH_AT, CHUNK = 4, 2, 3, 6  # 3 steps per epoch: the resume crosses an epoch end
BATCH = 16  # rows per rank (configs/tiny.yaml); 2 ranks: 96 triples make 3 global batches of 32
# After 4 AdamW steps in fp32. ZeRO-2 vs DDP: bitwise (2 ranks sum the same two gradients). ZeRO-3
# vs DDP, GradCache vs uncached, and either vs one process on the 32-row global batch (padded to its
# longest row, not each rank's): float32 sums in another order. Measured 5.1e-7 to 1.6e-5 on an
# AVX-512 host and up to 1.9e-5 on an AVX2 one (1 of 1024 elements: AdamW divides by the root of a
# gradient's square, so a near-zero gradient's float noise becomes a step-sized difference). A rank
# offset lost in the gather (the labels') moves weights by 4.8e-3: 48x this bar.
ATOL = {2: 0.0, 3: 1e-4}
REORDER_ATOL = 1e-4
ONE_ATOL = REORDER_ATOL
TEXTS = ["A Humdrum Star is the fourth studio album.", "short", "task: search result | query: who wrote it"]
STS = str(REPO / "configs/assets/tiny_eval/sts.tsv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (make install: the dev extra)"),
    pytest.mark.skipif(not (BIN / "gecko").exists(), reason="needs the gecko command beside this python (pip install -e .)"),
]


class Runs:
    """`gecko fit` runs by name, each started once (on first use) in a folder of its own."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.model = root / "tiny-bert-nodrop"
        cfg = json.loads((REPO / "configs/assets/tiny-bert/config.json").read_text())
        self.model.mkdir()
        for f in (REPO / "configs/assets/tiny-bert").iterdir():
            (self.model / f.name).write_bytes(f.read_bytes())
        (self.model / "config.json").write_text(json.dumps(cfg | {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}))
        self.done: dict[str, Path] = {}

    def callbacks(self, crash: bool) -> Path:
        """A third --config: checkpoints every SAVE_EVERY steps, the batch log, and the crash if asked."""
        cbs = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"every_n_train_steps": SAVE_EVERY, "save_top_k": -1}},
               {"class_path": "tests.cpu_deepspeed.BatchLog"}]
        if crash:
            cbs.append({"class_path": "tests.cpu_deepspeed.Crash", "init_args": {"at": CRASH_AT}})
        path = self.root / f"callbacks{'_crash' * crash}.yaml"
        path.write_text(yaml.safe_dump({"trainer": {"callbacks": cbs}}))
        return path

    def fit(self, name: str, stage: int | str, *extra: str, crash: bool = False, expect_ok: bool = True) -> Path:
        """stage: 2 or 3 (ZeRO, 2 processes), "ddp" (2 processes) or "one" (1 process, the 2-process global batch)."""
        if name in self.done:
            return self.done[name]
        out = self.root / name
        preset = ["--config", PRESET[stage]] if stage in PRESET else []
        strategy = {"ddp": ["--trainer.devices=2", "--trainer.strategy=ddp"],
                    "one": ["--trainer.devices=1", f"--data.init_args.batch_size={2 * BATCH}"]}.get(stage, [
                    "--trainer.devices=2", "--trainer.precision=32",
                    "--trainer.strategy.class_path=tests.cpu_deepspeed.CPUDeepSpeedStrategy"])
        cmd = [str(BIN / "gecko"), "fit", "--config", "configs/tiny.yaml", *preset, "--config", str(self.callbacks(crash)),
               "--trainer.accelerator=cpu", f"--data.init_args.batch_size={BATCH}", *strategy, f"--trainer.max_steps={STEPS}",
               "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={out}",
               f"--model.model_name_or_path={self.model}", *extra]
        res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
        assert (res.returncode == 0) == expect_ok, f"{name}: exit {res.returncode}\n{res.stderr[-4000:]}"
        self.done[name] = out
        return out


def env() -> dict:
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # tests.cpu_deepspeed
    base = dict(os.environ, PYTHONPATH=pythonpath, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1",
                HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline")
    return {k: v for k, v in base.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Runs(tmp_path_factory.mktemp("deepspeed"))
    torch.set_num_threads(n)


def checkpoint(run: Path, step: int = STEPS) -> Path:
    (path,) = (run / "checkpoints").glob(f"*-step={step}.ckpt")
    return path


def weights(run: Path, tmp_path: Path, step: int = STEPS) -> dict[str, torch.Tensor]:
    """The run's state dict at `step`: a DDP file as saved, a ZeRO folder merged by DeepSpeed's own converter."""
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    path = checkpoint(run, step)
    if path.is_dir():
        convert_zero_checkpoint_to_fp32_state_dict(str(path), str(tmp_path / "merged.pt"))
        path = tmp_path / "merged.pt"
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def assert_same_weights(got: dict, want: dict, atol: float, what: str) -> None:
    assert got.keys() == want.keys(), what
    for name, w in want.items():
        torch.testing.assert_close(got[name], w, rtol=0, atol=atol, msg=lambda m: f"{what}: {name}: {m}")


def batches(run: Path) -> dict[str, dict[str, str]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(run.glob("batches_rank*.json"))}


# ---- parity with DDP ------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_ends_at_the_ddp_weights(runs, tmp_path, stage):
    ddp, zero = runs.fit("ddp", "ddp"), runs.fit(f"zero{stage}", stage)
    assert batches(zero) == batches(ddp) and len(batches(ddp)) == 2  # both ranks, same rows, same order
    want = weights(ddp, tmp_path)
    assert max((want[k] - v).abs().max() for k, v in weights(ddp, tmp_path, SAVE_EVERY).items()) > 1e-3  # it trained
    assert_same_weights(weights(zero, tmp_path), want, ATOL[stage], f"ZeRO-{stage} vs DDP")
    # Both runs share our loss and gather; one process on the whole global batch shares neither
    # (the gather is the identity there), so a gather that is wrong on 2 ranks fails here.
    one = weights(runs.fit("one", "one"), tmp_path)
    assert_same_weights(weights(zero, tmp_path), one, ONE_ATOL, f"ZeRO-{stage} vs one process")


@pytest.mark.parametrize("stage", [2, 3])
def test_grad_cache_under_zero_ends_at_the_uncached_weights(runs, tmp_path, stage):
    cached = runs.fit(f"zero{stage}_gc", stage, f"--model.grad_cache_chunk_size={CHUNK}")  # 16 rows: chunks 6, 6, 4
    plain = runs.fit(f"zero{stage}", stage)
    assert_same_weights(weights(cached, tmp_path), weights(plain, tmp_path), REORDER_ATOL, f"ZeRO-{stage} GradCache vs plain")


# ---- DeepSpeed's own checkpoint merge, then export and eval ---------------------------------------


def reference_encoder(runs: Runs, tmp_path: Path):
    """The DDP-trained encoder, rebuilt without the checkpoint reader: GeckoModule + its state dict."""
    from gecko_lightning.module import GeckoModule

    module = GeckoModule(str(runs.model), random_init=True, matryoshka_dims=[32, 16])
    module.load_state_dict(weights(runs.fit("ddp", "ddp"), tmp_path), strict=True)
    return module.encoder.eval()


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_folder_exports_and_evaluates_to_the_trained_vectors(runs, tmp_path, monkeypatch, stage):
    from sentence_transformers import SentenceTransformer

    from gecko_lightning.evaluation import runner
    from gecko_lightning.evaluation.cli import main as eval_main
    from gecko_lightning.export import main as export_main

    folder = checkpoint(runs.fit(f"zero{stage}", stage))
    shards = sorted(p.name for p in (folder / "checkpoint").glob("*_states.pt"))
    assert sum("optim_states" in s for s in shards) == 2  # one fp32 partition per rank
    if stage == 3:
        assert sum("model_states" in s for s in shards) == 2  # parameters sharded too
    want = reference_encoder(runs, tmp_path)

    assert export_main([str(folder), str(tmp_path / "out")]) == 0  # `gecko export DIR OUT`
    theirs = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    torch.testing.assert_close(theirs, want.encode(TEXTS), rtol=0, atol=1e-5 + ATOL[stage])

    seen, embed = [], runner.embed  # `gecko eval --model DIR`: the vectors it scores

    def spy(encoder, texts, *args, **kwargs):
        seen.append((list(texts), embed(encoder, texts, *args, **kwargs)))
        return seen[-1][1]

    monkeypatch.setattr(runner, "embed", spy)
    assert eval_main(["--model", str(folder), "--sts", STS, "--output", str(tmp_path / "eval.json")]) == 0
    assert seen and json.loads((tmp_path / "eval.json").read_text())["sts.tsv"]["spearman"] is not None
    for texts, vectors in seen:
        torch.testing.assert_close(vectors, embed(want, texts, show_progress=False), rtol=0, atol=1e-5 + ATOL[stage])


# ---- resume ---------------------------------------------------------------------------------------


def test_killed_zero2_run_resumes_where_the_uninterrupted_run_ends(runs, tmp_path):
    whole = runs.fit("zero2", 2)
    killed = runs.fit("zero2_killed", 2, crash=True, expect_ok=False)
    assert not list((killed / "checkpoints").glob(f"*-step={STEPS}.ckpt"))  # it did die before the end
    saved = checkpoint(killed, SAVE_EVERY)
    resumed = runs.fit("zero2_resumed", 2, f"--ckpt_path={saved}")

    after = {rank: {s: d for s, d in log.items() if int(s) >= SAVE_EVERY} for rank, log in batches(resumed).items()}
    assert after == {rank: {s: d for s, d in log.items() if int(s) >= SAVE_EVERY} for rank, log in batches(whole).items()}
    assert sorted(int(s) for s in after["batches_rank0"]) == list(range(SAVE_EVERY, STEPS))  # started at the saved step
    assert_same_weights(weights(resumed, tmp_path), weights(whole, tmp_path), REORDER_ATOL, "resumed vs uninterrupted ZeRO-2")


# ---- the distillation term under ZeRO and GradCache -----------------------------------------------


def test_distill_under_zero2_with_grad_cache_ends_at_the_one_process_weights(runs, tmp_path):
    """model.distill=kl on a build with candidate lists: ZeRO-2 on 2 ranks with GradCache against one
    process on the 32-row global batch. The term is divided by the rows with a list in the *global*
    batch; a per-rank mean would weight the ranks' rows unequally whenever their counts differ."""
    from data_builders import cli

    build = runs.root / "fret_lists"
    if not (build / "manifest.json").exists():
        assert cli.main(["fret", "--config", str(REPO / "configs/data/fret_fake.yaml"), "--corpus.num_seeds=64",
                         "--output_dir", str(build)]) == 0
    lists = ["--model.distill=kl", "--model.teacher_temperature=0.5", f"--data.init_args.path={build}"]
    zero = runs.fit("zero2_kl_gc", 2, *lists, f"--model.grad_cache_chunk_size={CHUNK}")
    one = runs.fit("one_kl", "one", *lists)
    plain = runs.fit("one_kl0", "one", *lists[1:], "--model.distill=kl", "--model.distill_weight=0")
    assert max((weights(one, tmp_path)[k] - v).abs().max() for k, v in weights(plain, tmp_path).items()) > 1e-4  # the term trained
    assert_same_weights(weights(zero, tmp_path), weights(one, tmp_path), ONE_ATOL, "ZeRO-2 GradCache distill vs one process")
