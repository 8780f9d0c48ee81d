"""GeckoModule: one training step, the optimiser groups and the schedule."""

import math

import pytest
import torch

from gecko_lightning.module import GeckoModule, _split_decay, lr_lambda


@pytest.fixture
def module(tiny_bert):
    torch.manual_seed(0)
    return GeckoModule(str(tiny_bert), random_init=True, matryoshka_dims=[32, 16])


def make_batch(module, b=4):
    tok = module.encoder.tokenize
    return {
        "query": dict(tok([f"task: question answering | query: what is item {i}" for i in range(b)])),
        "positive": dict(tok([f"title: none | text: item {i} is a thing number {i}" for i in range(b)])),
        "negative": dict(tok([f"title: none | text: unrelated text {i}" for i in range(b)])),
        "same_tower": torch.ones(b, dtype=torch.bool),
    }


def test_training_step_is_finite_and_reaches_the_encoder(module):
    loss = module.training_step(make_batch(module), 0)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for n, p in module.encoder.backbone.named_parameters() if "embeddings.word_embeddings" in n or "layer.1." in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_loss_equals_hand_assembled_matryoshka(module):
    """compute_loss = Σ over dims of the base loss on truncated, re-normalised embeddings."""
    from gecko_lightning.losses import contrastive_loss
    import torch.nn.functional as F

    batch = make_batch(module)
    with torch.no_grad():
        q, p, n = (module.embed(batch[k]) for k in ("query", "positive", "negative"))
        got = module.compute_loss(q, p, n, batch)
        cut = lambda x: F.normalize(x[:, :16], dim=-1)  # noqa: E731
        want = contrastive_loss(q, p, n) + contrastive_loss(cut(q), cut(p), cut(n))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_no_weight_decay_on_bias_and_layernorm(module):
    decay, no_decay = _split_decay(module)
    names = {id(p): n for n, p in module.named_parameters()}
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay)
    assert any("LayerNorm.weight" in names[id(p)] for p in no_decay)
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay)
    assert len(decay) + len(no_decay) == len(list(module.parameters()))


def test_schedule_warmup_then_decay():
    lin, cos = lr_lambda("linear", 4, 14), lr_lambda("cosine", 4, 14)
    assert [lin(s) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert lin(4) == 1.0 and lin(9) == pytest.approx(0.5) and lin(14) == 0.0
    assert cos(9) == pytest.approx(0.5) and cos(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(temperature=0), "model.temperature must be > 0, got 0"),
        (dict(hard_negatives="most"), "model.hard_negatives must be one of ('own', 'all', 'none'), got 'most'"),
        (dict(matryoshka_dims=[64]), "matryoshka dim 64 exceeds the embedding dimension 32"),
        (dict(matryoshka_dims=[32, 16], matryoshka_weights=[1.0]), "need one weight per matryoshka_dims entry"),
    ],
)
def test_bad_config_is_named(tiny_bert, kwargs, message):
    with pytest.raises(ValueError) as e:
        GeckoModule(str(tiny_bert), random_init=True, **kwargs)
    assert message in str(e.value)


def test_schedule_rejects_unknown_kind():
    with pytest.raises(ValueError, match="model.scheduler must be 'linear', 'cosine' or 'constant', got 'step'"):
        lr_lambda("step", 0, 10)


def test_package_path_resolves_to_installed_folder(tmp_path, monkeypatch):
    from gecko_lightning.paths import resolve_path

    pkg = tmp_path / "fake_models_pkg"
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_path("package:fake_models_pkg/model") == str(pkg / "model")
    assert resolve_path("bert-base-uncased") == "bert-base-uncased"
    with pytest.raises(FileNotFoundError, match="package 'no_such_pkg_x' is not installed; pip install no-such-pkg-x"):
        resolve_path("package:no_such_pkg_x/model")


def test_package_paths_load_encoder_and_data_tokenizer(tmp_path, monkeypatch, tiny_bert):
    """`package:` names work for the backbone and for the DataModule's tokenizer (linked from the model)."""
    import shutil

    from gecko_lightning.data.formatting import load_tokenizer
    from gecko_lightning.encoder import GeckoEncoder

    shutil.copytree(tiny_bert, tmp_path / "tiny_models_pkg" / "model")
    (tmp_path / "tiny_models_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    enc = GeckoEncoder.from_pretrained("package:tiny_models_pkg/model", random_init=True)
    tok = load_tokenizer("package:tiny_models_pkg/model")
    assert tok.is_fast and tok.get_vocab() == enc.tokenizer.get_vocab()


def test_encoder_trains_with_dropout(module, tmp_path):
    """from_pretrained returns an eval-mode backbone; a module loading saved weights must train with dropout on."""
    module.encoder.save_pretrained(tmp_path)
    loaded = GeckoModule(str(tmp_path))
    assert loaded.training and all(m.training for m in loaded.encoder.modules())
