"""`gecko export --onnx --quantize int8`: ONNX Runtime's vectors equal `SentenceTransformer(out).encode`,
and the check that says so fails on a wrong pooling, a lost normalisation, a damaged graph or file."""

import filecmp
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from gecko_lightning.encoder import GeckoEncoder  # noqa: E402
from gecko_lightning.errors import UserError  # noqa: E402
from gecko_lightning.export import main  # noqa: E402
from gecko_lightning.onnx_encoder import OnnxEncoder  # noqa: E402
from gecko_lightning.onnx_export import check_vectors, machine_arch, quantized_file  # noqa: E402

TEXTS = ["A Humdrum Star is the fourth studio album.", "short", "Róisín Owens is a Professor in the Department of Chemical "
         "Engineering. " * 12, "x", "what causes tides?", "Tides are the rise and fall of sea levels."]
TINY_BERT = Path(__file__).resolve().parents[1] / "configs" / "assets" / "tiny-bert"
INT8 = "onnx/model_qint8_avx512_vnni.onnx"  # signed int8 weights run on any CPU; the arch only tunes the choice


def _source(tmp, tiny_bert, pooling, projection_dim):
    torch.manual_seed(0)
    enc = GeckoEncoder.from_pretrained(tiny_bert, random_init=True, projection_dim=projection_dim, max_length=32, pooling=pooling)
    enc.save_pretrained(tmp / "src")
    return tmp / "src"


@pytest.fixture(scope="module", params=[("mean", None), ("cls", 16)], ids=["mean", "cls-projected"])
def exported(request, tmp_path_factory):
    """(plain export, ONNX export) of one tiny model, through the command."""
    tmp = tmp_path_factory.mktemp("onnx")
    src = _source(tmp, TINY_BERT, *request.param)
    assert main([str(src), str(tmp / "plain")]) == 0
    assert main([str(src), str(tmp / "out"), "--onnx", "--quantize", "int8", "--quantize-arch", "avx512_vnni"]) == 0
    return tmp / "plain", tmp / "out"


def _reference(out, texts=TEXTS):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(out), device="cpu").encode(texts)


def test_files_axes_and_unchanged_folder(exported):
    import onnx

    plain, out = exported
    assert sorted(p.name for p in (out / "onnx").iterdir()) == ["model.onnx", "model_qint8_avx512_vnni.onnx"]
    graph = onnx.load(str(out / "onnx" / "model.onnx")).graph
    assert [i.name for i in graph.input][:2] == ["input_ids", "attention_mask"]
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch_size", "sequence_length"]
    assert [o.name for o in graph.output] == ["last_hidden_state"]
    assert [d.dim_param for d in graph.output[0].type.tensor_type.shape.dim][:2] == ["batch_size", "sequence_length"]
    # every other file is what the export without --onnx writes, byte for byte; the card gains the ONNX lines
    same = filecmp.dircmp(plain, out, ignore=["onnx", "README.md"])
    assert not same.left_only and not same.right_only and not same.diff_files
    assert all(not sub.diff_files for sub in same.subdirs.values())
    card = (out / "README.md").read_text()
    assert "`onnx/model.onnx`" in card and f"`{INT8}`" in card
    projected = (out / "2_Dense").is_dir()
    assert ("specific_model_path" in card) != projected and ("2_Dense/model.safetensors" in card) == projected


@pytest.mark.parametrize("batch_size", [1, 4])
def test_onnx_runtime_matches_encode(exported, batch_size):
    _, out = exported
    ref = _reference(out)
    fp32 = OnnxEncoder(out).encode(TEXTS, batch_size=batch_size)
    assert check_vectors(fp32, ref, "fp32") >= 0.99999
    int8 = OnnxEncoder(out, INT8).encode(TEXTS, batch_size=batch_size)
    assert check_vectors(int8, ref, "int8", min_cosine=0.99, mean=True) >= 0.99
    prompted = OnnxEncoder(out).encode(TEXTS, prompt_name="query")
    from sentence_transformers import SentenceTransformer

    check_vectors(prompted, SentenceTransformer(str(out), device="cpu").encode(TEXTS, prompt_name="query"), "prompted")


def test_altered_reading_or_graph_fails(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    _, out = exported
    ref = _reference(out)
    wrong_pooling = OnnxEncoder(out)
    wrong_pooling.pooling = "lasttoken"
    with pytest.raises(UserError, match="cosine"):
        check_vectors(wrong_pooling.encode(TEXTS), ref, "wrong pooling")
    unnormalised = OnnxEncoder(out)
    unnormalised.normalize = False
    with pytest.raises(UserError, match="norm gap"):
        check_vectors(unnormalised.encode(TEXTS), ref, "no normalisation")
    # one weight matrix of the graph scaled: a graph that is not this model
    model = onnx.load(str(out / "onnx" / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims) if len(t.dims) == 2 and t.data_type == 1 else 0)
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    altered = shutil.copytree(out, tmp_path / "altered")
    onnx.save(model, str(altered / "onnx" / "model.onnx"))
    with pytest.raises(UserError, match="cosine"):
        check_vectors(OnnxEncoder(altered).encode(TEXTS), ref, "altered graph")
    data = (out / "onnx" / "model.onnx").read_bytes()
    (altered / "onnx" / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="ONNX Runtime cannot load it"):
        OnnxEncoder(altered)


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and match in err, err


def test_bad_flags_one_line_exit_2(tmp_path, capsys, monkeypatch):
    src, out = str(tmp_path / "src"), str(tmp_path / "out")  # flags are refused before the source is read
    _one_line_error(capsys, [src, out, "--quantize", "int8"], "add --onnx")
    _one_line_error(capsys, [src, out, "--onnx", "--quantize", "int8", "--quantize-arch", "sse4"], "'sse4' is unknown")
    _one_line_error(capsys, [src, out, "--onnx", "--quantize", "int4"], "use --quantize int8")
    _one_line_error(capsys, [src, out, "--onnx", "--quantize-arch", "avx2"], "only applies with --quantize int8")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    _one_line_error(capsys, [src, out, "--onnx"], "pip install 'gecko-lightning[onnx]'")


def test_arch_names():
    assert machine_arch() in ("avx512_vnni", "avx512", "avx2", "arm64")
    assert quantized_file("avx2") == "model_quint8_avx2.onnx"  # sentence-transformers: unsigned weights on AVX2
    assert quantized_file("arm64") == "model_qint8_arm64.onnx"


def test_token_limit_fastembed_reads(tmp_path):
    """fastembed truncates at min(model_max_length, max_length) of tokenizer_config.json; a base tokenizer's
    stale max_length (all-MiniLM-L6-v2 carries 128 beside its 256-token limit) must not survive the export."""
    import json

    base = shutil.copytree(TINY_BERT, tmp_path / "base")
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**cfg, "max_length": 8}))
    src = _source(tmp_path, base, "mean", None)  # max_length 32
    assert main([str(src), str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert min(written["model_max_length"], written["max_length"]) == 32
