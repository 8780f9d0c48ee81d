"""`encoder_from_checkpoint`: the library reads what `gecko fit` writes, without the trainer.

Covered: a `.ckpt` written by a real Lightning `Trainer.fit` + `save_checkpoint` (the base model's
folder deleted first, transformers' weight loading forbidden), and a DeepSpeed checkpoint folder.

Here no DeepSpeed engine writes the folder (tests/test_deepspeed_cpu.py has DeepSpeed write real ZeRO-2
and ZeRO-3 folders on 2 CPU ranks). The test writes the layout Lightning's `DeepSpeedStrategy.save_checkpoint` produces for ZeRO-2 on one rank
through DeepSpeed's `engine.save_checkpoint(dir, client_state=<Lightning checkpoint without
state_dict/optimizer_states>, tag="checkpoint")`:

    <dir>/latest                                               "checkpoint"
    <dir>/zero_to_fp32.py                                      (a placeholder for DeepSpeed's script)
    <dir>/checkpoint/mp_rank_00_model_states.pt                module (bf16), buffer_names, param_shapes,
                                                               shared_params, ds_config, ... + client state
    <dir>/checkpoint/zero_pp_rank_0_mp_rank_00_optim_states.pt optimizer_state_dict: zero_stage 2,
                                                               partition_count, single_partition_of_fp32_groups

Lightning's `convert_zero_checkpoint_to_fp32_state_dict` needs deepspeed importable, so it is
replaced by `reference_convert`: DeepSpeed's ZeRO-2 rule for one rank (fp32 weights cut from the flat
partitions by `param_shapes`, buffers from `module`) followed by Lightning's client-state merge. Exercised:
layout detection, our call into the converter (path and output file), reading its fp32 file, strict
loading, `gecko export DIR` and `gecko eval --model DIR`. Not exercised: DeepSpeed's own reconstruction
(ZeRO-3 and multi-rank partitions), which `test_real_converter_reads_the_layout` runs where deepspeed is installed.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from gecko_lightning.checkpoint import encoder_from_checkpoint, is_deepspeed_checkpoint
from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.text_format import Template

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["A Humdrum Star is the fourth studio album.", "short", "task: search result | query: who wrote it"]
STS = str(REPO / "configs/assets/tiny_eval/sts.tsv")
# convert_zero_checkpoint_to_fp32_state_dict drops these DeepSpeed keys from the client state.
LIGHTNING_DROPS = ("module", "optimizer", "lr_scheduler", "csr_tensor_module_names", "skipped_steps", "global_steps",
                   "dp_world_size", "mp_world_size")
DS_CONFIG = {"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}, "train_micro_batch_size_per_gpu": 8}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One optimizer step of `gecko fit`'s classes with the `plain` text format; the base folder is then deleted."""
    from gecko_lightning.data import FRetDataModule
    from gecko_lightning.module import GeckoModule

    root = tmp_path_factory.mktemp("trained")
    base = root / "base-model"
    shutil.copytree(REPO / "configs/assets/tiny-bert", base)
    torch.manual_seed(0)
    module = GeckoModule(str(base), random_init=True, projection_dim=16, max_length=64, matryoshka_dims=[16, 8], lr=1e-3)
    data = FRetDataModule(str(REPO / "configs/assets/tiny_fret"), tokenizer=str(base), batch_size=8,
                          query_max_length=32, doc_max_length=64, format="plain")
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(root / "last.ckpt")
    client = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)  # what a strategy is handed to save
    names = {id(p): n for n, p in module.named_parameters()}
    groups = [[names[id(p)] for p in g["params"]] for g in trainer.optimizers[0].param_groups]
    shutil.rmtree(base)
    return SimpleNamespace(module=module.eval(), ckpt=root / "last.ckpt", client=client, groups=groups, root=root)


def write_zero2_folder(folder: Path, client: dict, groups: list[list[str]], buffers: list[str]) -> None:
    """The folder DeepSpeedStrategy.save_checkpoint writes for ZeRO-2 on one rank (see the module docstring)."""
    state, tag = client["state_dict"], "checkpoint"
    (folder / tag).mkdir(parents=True)
    flat = []
    for names in groups:  # one fp32 partition per optimizer group, padded to 2 x world size
        part = torch.cat([state[n].float().flatten() for n in names])
        flat.append(torch.cat([part, part.new_zeros(part.numel() % 2)]))
    client_state = {k: v for k, v in client.items() if k not in ("state_dict", "optimizer_states")}
    torch.save({"module": {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
                "buffer_names": buffers, "optimizer": None,
                "param_shapes": [OrderedDict((n, state[n].shape) for n in names) for names in groups],
                "frozen_param_shapes": None, "shared_params": {}, "frozen_param_fragments": None, "lr_scheduler": None,
                "data_sampler": None, "random_ltd": None, "sparse_tensor_module_names": set(), "skipped_steps": 0,
                "global_steps": 1, "global_samples": 8, "dp_world_size": 1, "mp_world_size": 1,
                "ds_config": DS_CONFIG, "ds_version": "0.16.4", **client_state},
               folder / tag / "mp_rank_00_model_states.pt")
    torch.save({"optimizer_state_dict": {"zero_stage": 2, "loss_scaler": None, "dynamic_loss_scale": False, "overflow": False,
                                         "clip_grad": 1.0, "base_optimizer_state": {}, "partition_count": [1] * len(groups),
                                         "single_partition_of_fp32_groups": flat, "ds_version": "0.16.4"},
                "ds_config": DS_CONFIG, "ds_version": "0.16.4"},
               folder / tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (folder / "latest").write_text(tag)
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed copies its zero_to_fp32.py recovery script here\n")


def reference_convert(checkpoint_dir, output_file, tag=None):
    """Lightning's converter on a one-rank ZeRO-2 folder: DeepSpeed's reconstruction, then the client-state merge."""
    folder = Path(checkpoint_dir) / (tag or (Path(checkpoint_dir) / "latest").read_text().strip())
    model = torch.load(folder / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    (optim_file,) = folder.glob("*_optim_states.pt")
    optim = torch.load(optim_file, map_location="cpu", weights_only=False)["optimizer_state_dict"]
    assert optim["zero_stage"] == 2 and set(optim["partition_count"]) == {1}
    state = {k: v.float() for k, v in model["module"].items() if k in model["buffer_names"]}
    for shapes, flat in zip(model["param_shapes"], optim["single_partition_of_fp32_groups"]):
        offset = 0
        for name, shape in shapes.items():
            state[name] = flat[offset : offset + shape.numel()].view(shape)
            offset += shape.numel()
    client = {k: v for k, v in model.items() if k not in LIGHTNING_DROPS} | {"state_dict": state}
    torch.save(client, output_file)
    return client


@pytest.fixture
def zero_folder(trained, tmp_path):
    folder = tmp_path / "epoch=0-step=1.ckpt"
    buffers = [n for n, _ in trained.module.named_buffers()]
    write_zero2_folder(folder, trained.client, trained.groups, buffers)
    return folder


@pytest.fixture
def converter(monkeypatch):
    from lightning.pytorch.utilities import deepspeed as lightning_deepspeed

    calls = []

    def convert(checkpoint_dir, output_file, tag=None):
        calls.append((Path(checkpoint_dir), Path(output_file)))
        return reference_convert(checkpoint_dir, output_file, tag)

    monkeypatch.setattr(lightning_deepspeed, "convert_zero_checkpoint_to_fp32_state_dict", convert)
    return calls


def _no_weight_loading(monkeypatch):
    from transformers import PreTrainedModel

    def refuse(*args, **kwargs):
        raise AssertionError("from_checkpoint must never load a base model's weights")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))


def test_lightning_ckpt_loads_without_its_base_model(trained, monkeypatch):
    _no_weight_loading(monkeypatch)
    enc = encoder_from_checkpoint(trained.ckpt)  # the base folder no longer exists
    assert enc.text_format == Template.from_preset("plain") and enc.dim == 16 and enc.max_length == 64
    for name, tensor in trained.module.encoder.state_dict().items():
        assert torch.equal(enc.state_dict()[name], tensor), name
    torch.testing.assert_close(enc.encode(TEXTS), trained.module.encoder.encode(TEXTS), atol=1e-6, rtol=0)


def test_eval_and_export_default_to_the_trained_format(trained, tmp_path, monkeypatch):
    """`gecko eval --model CKPT` formats with the checkpoint's `plain` template; --prompts gecko overrides it."""
    import json

    from gecko_lightning.evaluation import runner
    from gecko_lightning.evaluation.cli import main as eval_main
    from gecko_lightning.export import main as export_main

    seen, embed = [], runner.embed
    monkeypatch.setattr(runner, "embed", lambda enc, texts, *a, **k: (seen.append(list(texts)), embed(enc, texts, *a, **k))[1])
    assert eval_main(["--model", str(trained.ckpt), "--sts", STS]) == 0
    assert seen[-1][0].startswith("sentence similarity ") and not seen[-1][0].startswith("task:")
    assert eval_main(["--model", str(trained.ckpt), "--sts", STS, "--prompts", "gecko"]) == 0
    assert seen[-1][0].startswith("task: sentence similarity | query: ")
    assert export_main([str(trained.ckpt), str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "gecko_encoder.json").read_text())["text_format"]
    prompts = json.loads((tmp_path / "out" / "config_sentence_transformers.json").read_text())["prompts"]
    assert saved == Template.from_preset("plain").to_dict() and prompts["fact checking"] == "fact checking "
    assert GeckoEncoder.from_pretrained(tmp_path / "out").text_format == Template.from_preset("plain")


def test_deepspeed_folder_is_detected_and_loaded(trained, zero_folder, converter, monkeypatch):
    _no_weight_loading(monkeypatch)
    assert is_deepspeed_checkpoint(zero_folder) and not is_deepspeed_checkpoint(trained.root) and not is_deepspeed_checkpoint(trained.ckpt)
    enc = encoder_from_checkpoint(zero_folder)
    (folder, out_file), = converter
    assert folder == zero_folder and out_file.name == "fp32.ckpt" and not out_file.exists()  # a temporary file, removed
    for name, tensor in trained.module.encoder.state_dict().items():  # the fp32 partitions, not the bf16 module copy
        assert torch.equal(enc.state_dict()[name], tensor), name
    assert enc.text_format == Template.from_preset("plain")


def test_deepspeed_folder_exports_and_evaluates(trained, zero_folder, converter, tmp_path, capsys):
    import json

    from sentence_transformers import SentenceTransformer

    from gecko_lightning.evaluation.cli import main as eval_main
    from gecko_lightning.export import main as export_main

    assert export_main([str(zero_folder), str(tmp_path / "out")]) == 0
    theirs = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    torch.testing.assert_close(theirs, trained.module.encoder.encode(TEXTS), atol=1e-5, rtol=0)
    assert "Trained dims: 16, 8" in (tmp_path / "out" / "README.md").read_text()
    scores = {}
    for name, model in (("folder", zero_folder), ("file", trained.ckpt)):  # the same weights: the same score
        assert eval_main(["--model", str(model), "--sts", STS, "--output", str(tmp_path / f"{name}.json")]) == 0
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())["sts.tsv"]["spearman"]
    assert scores["folder"] == pytest.approx(scores["file"], abs=1e-4)
    assert len(converter) == 2  # export and eval each converted the folder once


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed: the real converter runs")
def test_deepspeed_folder_without_deepspeed_is_a_one_line_error(zero_folder, capsys):
    from gecko_lightning.evaluation.cli import main as eval_main

    assert eval_main(["--model", str(zero_folder), "--sts", STS]) == 2
    err = capsys.readouterr().err
    assert f"{zero_folder} is a DeepSpeed checkpoint folder; reading it needs the deepspeed package" in err


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (pip install deepspeed)")
def test_real_converter_reads_the_layout(trained, zero_folder):
    enc = encoder_from_checkpoint(zero_folder)
    for name, tensor in trained.module.encoder.state_dict().items():
        assert torch.equal(enc.state_dict()[name], tensor), name


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="needs deepspeed (pip install deepspeed)")
def test_export_of_a_deepspeed_folder_prints_only_its_report(zero_folder, tmp_path):
    """`gecko export DIR` imports DeepSpeed to convert the folder; in a fresh process without a GPU that
    import logs "Setting accelerator to CPU" through a logger writing to stdout. The line must go to
    stderr, and stdout hold only the command's own report."""
    # WANDB_MODE=offline (conftest) makes transformers print "Running in WANDB offline mode" to stdout when
    # sentence-transformers is imported, in any command: not DeepSpeed's doing, so not what this checks.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | {"CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, "-m", "gecko_lightning", "export", str(zero_folder), str(tmp_path / "out")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Setting accelerator to CPU" in res.stderr
    assert res.stdout.splitlines() == [f"[gecko export] wrote {tmp_path / 'out'}"]


def test_checkpoint_weights_load_strictly(trained, tmp_path):
    ckpt = torch.load(trained.ckpt, map_location="cpu", weights_only=False)
    ckpt["state_dict"]["encoder.backbone.extra.weight"] = torch.zeros(2)
    torch.save(ckpt, tmp_path / "extra.ckpt")
    with pytest.raises(ValueError, match=r"extra.ckpt: its encoder weights do not match the encoder it describes"):
        encoder_from_checkpoint(tmp_path / "extra.ckpt")


def test_evaluation_and_export_never_import_the_trainer(trained):
    """Loading goes downward: evaluation, export and the gradient cache import no LightningModule."""
    code = (
        "import sys\n"
        "import gecko_lightning.evaluation, gecko_lightning.evaluation.cli, gecko_lightning.evaluation.runner\n"
        "import gecko_lightning.evaluation.callback, gecko_lightning.evaluation.mteb_eval, gecko_lightning.export\n"
        "import gecko_lightning.grad_cache\n"
        "from gecko_lightning.evaluation.models import load_encoder\n"
        f"load_encoder({str(trained.ckpt)!r})\n"
        "print(sorted(m for m in sys.modules if m in ('gecko_lightning.module', 'gecko_lightning.lightning_cli')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
