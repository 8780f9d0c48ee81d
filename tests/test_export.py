"""Export round trip: sentence-transformers and transformers load the folder and agree with our embeddings."""

import json
import shutil

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
    assert main([str(ckpt), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "other.ckpt holds no encoder weights" in err and "gecko fit" in err


def test_refuses_non_empty_out_dir(tmp_path, tiny_bert, capsys):
    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert main([str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_failed_overwrite_leaves_old_export_byte_identical(tmp_path, tiny_bert, capsys):
    """A mistyped source must not cost the previous export: it is only replaced once the new one is written."""
    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([str(tmp_path / "no_such.ckpt"), str(out), "--overwrite"]) == 2
    assert "no_such.ckpt: no such checkpoint" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temp folder left behind


@pytest.mark.parametrize("target", [".", "sub"])
def test_export_onto_its_own_source_is_refused(tmp_path, tiny_bert, capsys, target):
    src = tmp_path / "src"
    _encoder(tiny_bert).save_pretrained(src)
    before = sorted(p.name for p in src.iterdir())
    assert main([str(src), str(src / target), "--overwrite"]) == 2
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


def _card_meta(folder):
    import yaml

    return yaml.safe_load((folder / "README.md").read_text().split("---", 2)[1])


def _trained_checkpoint(tmp_path, tiny_bert, base: str, data: dict):
    """A `gecko fit`-style checkpoint whose hparams name `base` as the backbone it started from."""
    from gecko_lightning.checkpoint import DATA_KEY, ENCODER_KEY, encoder_record
    from gecko_lightning.module import GeckoModule

    torch.manual_seed(0)
    module = GeckoModule(str(tiny_bert), random_init=True, max_length=64, matryoshka_dims=[32, 16])
    hparams = dict(module.hparams) | {"model_name_or_path": base}
    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": L.__version__,
                ENCODER_KEY: encoder_record(module.encoder), DATA_KEY: data}, ckpt)
    return ckpt


def test_card_metadata_and_model_index(tmp_path, tiny_bert):
    data = {"snli": {"path": "data/snli", "source": "stanfordnlp/snli"}, "fret": {"path": "data/fret", "source": None}}
    ckpt = _trained_checkpoint(tmp_path, tiny_bert, "sentence-transformers/all-MiniLM-L6-v2", data)
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"_meta": {"labels": {}, "model": str(ckpt), "prompts": "gecko", "split": "dev", "dims": [256]},
                                   "scifact": {"ndcg_at_10@256": 64.51, "recall_at_100@256": 92.5},
                                   "sts-test.csv": {"spearman@256": 80.125}}))
    assert main([str(ckpt), str(tmp_path / "out"), "--results", str(results), "--name", "me/gecko-small"]) == 0
    meta = _card_meta(tmp_path / "out")
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["datasets"] == ["stanfordnlp/snli"]
    assert "license" not in meta  # the base model's card is not available offline: not guessed
    assert (meta["pipeline_tag"], meta["library_name"]) == ("sentence-similarity", "sentence-transformers")
    assert meta["model-index"] == [{"name": "me/gecko-small", "results": [
        {"task": {"type": "Retrieval"}, "dataset": {"name": "scifact", "type": "scifact", "split": "dev"},
         "metrics": [{"type": "ndcg_at_10", "value": 64.51, "name": "ndcg_at_10 at 256 dims"},
                     {"type": "recall_at_100", "value": 92.5, "name": "recall_at_100 at 256 dims"}]},
        {"task": {"type": "STS"}, "dataset": {"name": "sts-test.csv", "type": "sts-test.csv", "split": "dev"},
         "metrics": [{"type": "spearman", "value": 80.125, "name": "spearman at 256 dims"}]}]}]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "license not recorded" in card and "- `fret`: data/fret" in card and "| scifact | ndcg_at_10@256 | 64.51 |" in card


def test_card_license_comes_from_a_local_base_models_card(tmp_path, tiny_bert):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_bert, base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# a base model\n")
    ckpt = _trained_checkpoint(tmp_path, tiny_bert, str(base), {})
    assert main([str(ckpt), str(tmp_path / "out")]) == 0
    meta = _card_meta(tmp_path / "out")
    assert meta["license"] == "apache-2.0" and "base_model" not in meta and "datasets" not in meta  # a local folder has no Hub id
    assert "model-index" not in meta  # no results given, none beside the checkpoint


def test_push_to_hub_uploads_the_export(tmp_path, tiny_bert, monkeypatch, capsys):
    from gecko_lightning import hub

    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    monkeypatch.setenv("GECKO_HUB_STANDIN", str(tmp_path / "hub"))
    calls, upload = [], hub.upload_folder
    monkeypatch.setattr(hub, "upload_folder", lambda *a, **k: (calls.append((a, k)), upload(*a, **k))[1])
    assert main([str(tmp_path / "src"), str(tmp_path / "out"), "--push-to-hub", "me/gecko-tiny", "--private"]) == 0
    assert calls == [((tmp_path / "out", "me/gecko-tiny"), {"repo_type": "model", "private": True})]
    pushed = tmp_path / "hub" / "model" / "me" / "gecko-tiny"
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    assert files(pushed) == files(tmp_path / "out") and (pushed / "model.safetensors").is_file()
    assert 'SentenceTransformer("me/gecko-tiny")' in (pushed / "README.md").read_text()  # the card names the repo
    assert "uploaded" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--push-to-hub", "noslash"], "--push-to-hub 'noslash': name the repository as OWNER/NAME"),
    (["--push-to-hub", "me/bad name"], "--push-to-hub 'me/bad name': Repo id must use alphanumeric chars"),
    (["--private"], "--private only applies with --push-to-hub OWNER/NAME"),
    (["--results", "RESULTS_NOT_JSON"], "cannot read it as JSON"),
    (["--results", "RESULTS_BAD_SHAPE"], "'scifact' maps to"),
    (["--results", "NO_SUCH_RESULTS"], "no_such.json: no such file"),
], ids=["repo-without-owner", "repo-with-space", "private-alone", "results-not-json", "results-bad-shape", "results-missing"])
def test_bad_input_exits_2_before_writing(tmp_path, tiny_bert, monkeypatch, capsys, args, message):
    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "shape.json").write_text(json.dumps({"scifact": 64.5}))
    swap = {"RESULTS_NOT_JSON": str(tmp_path / "bad.json"), "RESULTS_BAD_SHAPE": str(tmp_path / "shape.json"),
            "NO_SUCH_RESULTS": str(tmp_path / "no_such.json")}
    monkeypatch.setenv("GECKO_HUB_STANDIN", str(tmp_path / "hub"))
    capsys.readouterr()  # the source's save_pretrained progress bar
    assert main([str(tmp_path / "src"), str(tmp_path / "out"), *[swap.get(a, a) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gecko export: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "hub").exists()


def test_gecko_command_exits_2_on_a_missing_checkpoint(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "gecko_lightning", "export", str(tmp_path / "none.ckpt"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "none.ckpt: no such checkpoint file or model folder" in run.stderr and "Traceback" not in run.stderr


def test_card_shows_the_strings_a_server_client_sends(tmp_path, tiny_bert):
    """A server applies no prompt: the card's strings, filled in, are what encode's named prompts produce."""
    from gecko_lightning.model_card import client_strings
    from gecko_lightning.text_format import GECKO

    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out", matryoshka_dims=[16, 8])
    prompts = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    strings = client_strings(GECKO)
    assert strings["query"].format(query="what causes tides?") == prompts["query"] + "what causes tides?"
    assert strings["document"].format(text="Tides rise.") == prompts["document"] + "Tides rise."
    card = (out / "README.md").read_text()
    assert "`task: search result \\| query: {query}`" in card and "`title: {title} \\| text: {text}`" in card
    assert '"task: search result | query: what causes tides?"' in card  # the OpenAI-client example sends it
    assert "--runner pooling" in card and '{"truncate_prompt_tokens": 64}' in card
    assert json.loads((out / "config.json").read_text())["matryoshka_dimensions"] == [16, 8]  # vLLM's `dimensions`


def test_token_limit_is_where_servers_read_it(tmp_path, tiny_bert):
    """vLLM reads `max_seq_length` from sentence_bert_config.json; sentence-transformers must agree with it."""
    from sentence_transformers import SentenceTransformer

    _encoder(tiny_bert).save_pretrained(tmp_path / "src")
    out = export(tmp_path / "src", tmp_path / "out")
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
    assert SentenceTransformer(str(out), device="cpu").max_seq_length == 64


def _tuned_checkpoint(tmp_path, tiny_bert, projection_dim=None):
    """(base folder with weights, a checkpoint whose encoder is that base moved by noise, the tuned backbone)."""
    from gecko_lightning.module import GeckoModule

    _encoder(tiny_bert).save_pretrained(tmp_path / "base")
    module = GeckoModule(str(tmp_path / "base"), projection_dim=projection_dim, max_length=64)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": L.__version__}, ckpt)
    return tmp_path / "base", ckpt, module.encoder.backbone.state_dict()


def _hand_average(base_dir, tuned: dict, w: float) -> dict:
    """w x base + (1 - w) x tuned, tensor by tensor in float64, from the base folder's own weight file."""
    from safetensors.torch import load_file

    base = load_file(base_dir / "model.safetensors")
    return {k: (w * base[k].double() + (1 - w) * v.double()).float() if v.is_floating_point() else v for k, v in tuned.items()}


def test_base_weight_averages_the_tuned_weights_with_the_base_models(tmp_path, tiny_bert):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    base_dir, ckpt, tuned = _tuned_checkpoint(tmp_path, tiny_bert)
    assert main([str(ckpt), str(tmp_path / "out"), "--base-weight", "0.25"]) == 0
    got = AutoModel.from_pretrained(tmp_path / "out").state_dict()
    want = _hand_average(base_dir, tuned, 0.25)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0)
    assert any(not torch.equal(got[k], tuned[k]) for k in tuned)  # the tuned weights did move
    # the whole folder embeds as an encoder holding those weights does
    enc = _encoder(tiny_bert)
    enc.backbone.load_state_dict(want, strict=False)
    theirs = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    torch.testing.assert_close(theirs, enc.encode(TEXTS), atol=1e-5, rtol=0)
    assert f"Weights: 0.25 x `{base_dir}` + 0.75 x the fine-tuned weights" in (tmp_path / "out" / "README.md").read_text()


def test_base_weight_with_another_base(tmp_path, tiny_bert):
    from transformers import AutoModel

    _, ckpt, tuned = _tuned_checkpoint(tmp_path, tiny_bert)
    torch.manual_seed(7)
    GeckoEncoder.from_pretrained(tiny_bert, random_init=True, max_length=64).save_pretrained(tmp_path / "other")
    assert main([str(ckpt), str(tmp_path / "out"), "--base-weight", "0.5", "--base", str(tmp_path / "other")]) == 0
    got = AutoModel.from_pretrained(tmp_path / "out").state_dict()
    for key, value in _hand_average(tmp_path / "other", tuned, 0.5).items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0)


@pytest.mark.parametrize("source, args, message", [
    ("CKPT", ["--base-weight", "1"], "--base-weight 1.0: expected a number in [0, 1)"),
    ("CKPT", ["--base-weight", "-0.1"], "--base-weight -0.1: expected a number in [0, 1)"),
    ("CKPT", ["--base", "BASE"], "--base only applies with --base-weight W"),
    ("CKPT", ["--base-weight", "0.25", "--base", "SMALLER"], "is not the model this one was tuned from: for the weight"),
    ("BASE", ["--base-weight", "0.25"], "does not record the model it was tuned from; pass --base NAME_OR_PATH"),
    ("PROJECTED", ["--base-weight", "0.25", "--base", "BASE"], "--base-weight: this model has a trained projection"),
], ids=["one", "negative", "base-alone", "other-architecture", "folder-without-base", "projection"])
def test_base_weight_bad_input_exits_2_before_writing(tmp_path, tiny_bert, capsys, source, args, message):
    base_dir, ckpt, _ = _tuned_checkpoint(tmp_path, tiny_bert)
    shutil.copytree(tiny_bert, tmp_path / "smaller")  # the same backbone with half the feed-forward width
    config = json.loads((tiny_bert / "config.json").read_text())
    (tmp_path / "smaller" / "config.json").write_text(json.dumps(config | {"intermediate_size": config["intermediate_size"] // 2}))
    GeckoEncoder.from_pretrained(tmp_path / "smaller", random_init=True).save_pretrained(tmp_path / "smaller-weights")
    _encoder(tiny_bert, projection_dim=16).save_pretrained(tmp_path / "projected")
    paths = {"CKPT": ckpt, "BASE": base_dir, "SMALLER": tmp_path / "smaller-weights", "PROJECTED": tmp_path / "projected"}
    capsys.readouterr()
    assert main([str(paths[source]), str(tmp_path / "out"), *[str(paths.get(a, a)) for a in args]]) == 2
    *progress, last = capsys.readouterr().err.splitlines()  # loading the base shows transformers' progress bar first
    assert last.startswith("gecko export: error: ") and message in last, last
    assert all(not line or "Loading weights" in line for line in progress), progress
    assert not (tmp_path / "out").exists()
