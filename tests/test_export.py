"""Export round trip: sentence-transformers and transformers load the folder and agree with our embeddings."""

import json

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.export import export, main

TEXTS = ["A Humdrum Star is the fourth studio album.", "short", "Róisín Owens is a Professor in the Department of Chemical Engineering."]


def _encoder(tiny_bert, projection_dim=None):
    torch.manual_seed(0)
    return GeckoEncoder.from_pretrained(tiny_bert, random_init=True, projection_dim=projection_dim, max_length=64).eval()


@pytest.mark.parametrize("projection_dim", [None, 16])
def test_round_trip_sentence_transformers(tmp_path, tiny_bert, projection_dim):
    from sentence_transformers import SentenceTransformer

    enc = _encoder(tiny_bert, projection_dim)
    enc.save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out", matryoshka_dims=[8, 16])
    st = SentenceTransformer(str(out), device="cpu")
    ours = enc.encode(TEXTS)
    theirs = st.encode(TEXTS, convert_to_tensor=True).cpu()
    assert theirs.shape == ours.shape == (3, enc.dim)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    # named prompt == our Gecko query format, pooled over the prompt tokens too
    prompted = st.encode(TEXTS, prompt_name="fact checking", convert_to_tensor=True).cpu()
    torch.testing.assert_close(prompted, enc.encode([f"task: fact checking | query: {t}" for t in TEXTS]), atol=1e-5, rtol=0)
    # Matryoshka: truncate_dim keeps a prefix; cosine geometry equals our truncate + renormalise
    small = SentenceTransformer(str(out), device="cpu", truncate_dim=8).encode(TEXTS, convert_to_tensor=True).cpu()
    torch.testing.assert_close(F.normalize(small, dim=-1), F.normalize(ours[:, :8], dim=-1), atol=1e-5, rtol=0)


def test_round_trip_transformers_and_gecko(tmp_path, tiny_bert):
    from transformers import AutoModel

    enc = _encoder(tiny_bert, projection_dim=16)
    enc.save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out")
    backbone = AutoModel.from_pretrained(out)
    for name, tensor in enc.backbone.state_dict().items():
        torch.testing.assert_close(backbone.state_dict()[name], tensor)
    again = GeckoEncoder.from_pretrained(out)
    torch.testing.assert_close(again.encode(TEXTS), enc.encode(TEXTS), atol=1e-6, rtol=0)


def test_exported_folder_loads_for_gecko_eval(tmp_path, tiny_bert):
    """`gecko eval --model <export>` reads the folder through load_encoder, pooling check included."""
    from gecko_lightning.evaluation.models import load_encoder

    enc = _encoder(tiny_bert)
    enc.save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out")
    torch.testing.assert_close(load_encoder(str(out)).encode(TEXTS), enc.encode(TEXTS), atol=1e-6, rtol=0)


def test_folder_contents_and_card(tmp_path, tiny_bert):
    enc = _encoder(tiny_bert, projection_dim=16)
    enc.save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "results.json").write_text(json.dumps({"scifact": {"ndcg_at_10": 12.5}}))
    out = export(tmp_path / "src", tmp_path / "out", matryoshka_dims=[8, 16], name="my-gecko")
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense", "Normalize"]
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling.get("pooling_mode") == "mean" or pooling.get("pooling_mode_mean_tokens") is True
    prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    assert prompts["classification"] == "task: classification | query: "
    assert prompts["document"] == "title: none | text: "
    assert json.loads((out / "gecko_encoder.json").read_text())["matryoshka_dims"] == [16, 8]
    card = (out / "README.md").read_text()
    assert "truncate_dim=8" in card and "Trained dims: 16, 8" in card
    assert "| scifact | ndcg_at_10 | 12.50 |" in card  # results.json found beside the source


def test_export_from_lightning_checkpoint(tmp_path, tiny_bert):
    from sentence_transformers import SentenceTransformer

    from gecko_lightning.module import GeckoModule

    torch.manual_seed(0)
    module = GeckoModule(str(tiny_bert), random_init=True, projection_dim=24, max_length=64, matryoshka_dims=[24, 8])
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": L.__version__}, ckpt)
    assert main([str(ckpt), str(tmp_path / "out")]) == 0
    theirs = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    torch.testing.assert_close(theirs, module.encoder.encode(TEXTS), atol=1e-5, rtol=0)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "temperature: 0.05" in card and "Trained dims: 24, 8" in card


def test_checkpoint_without_encoder_is_named(tmp_path, capsys):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"head.weight": torch.zeros(2)}}, ckpt)
    assert main([str(ckpt), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "other.ckpt holds no encoder weights" in err and "gecko fit" in err


def test_refuses_non_empty_out_dir(tmp_path, tiny_bert, capsys):
    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main([str(tmp_path / "src"), str(tmp_path / "out")]) == 1
    assert "pass --overwrite" in capsys.readouterr().err


def test_failed_overwrite_leaves_old_export_byte_identical(tmp_path, tiny_bert, capsys):
    """A mistyped source must not cost the previous export: it is only replaced once the new one is written."""
    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([str(tmp_path / "no_such.ckpt"), str(out), "--overwrite"]) == 1
    assert "no_such.ckpt: no such checkpoint" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp folder left behind


@pytest.mark.parametrize("target", [".", "sub"])
def test_export_onto_its_own_source_is_refused(tmp_path, tiny_bert, capsys, target):
    src = tmp_path / "src"
    _encoder(tiny_bert).save_pretrained(src)
    before = sorted(p.name for p in src.iterdir())
    assert main([str(src), str(src / target), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "gecko export: error: cannot export" in err and "would replace its own source; pick another out_dir\n" in err
    assert sorted(p.name for p in src.iterdir()) == before


def test_overwrite_replaces_old_export_and_leaves_no_temp_folder(tmp_path, tiny_bert):
    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("old")
    out = export(tmp_path / "src", tmp_path / "out", overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "modules.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_crash_while_writing_leaves_old_export_and_no_temp_folder(tmp_path, tiny_bert, monkeypatch):
    import gecko_lightning.export as export_module

    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def half_written(encoder, folder, prompts):
        (folder / "modules.json").write_text("[]")
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "write_sentence_transformers", half_written)
    with pytest.raises(OSError, match="disk full"):
        export(tmp_path / "src", out, overwrite=True)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]
