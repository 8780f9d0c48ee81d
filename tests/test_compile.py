"""`model.compile: true`: the compiled backbone trains like the eager one, and new sequence lengths
reuse its one dynamic-shape graph instead of compiling again."""


import pytest
import torch
import torch._dynamo

from gecko_lightning.module import GeckoModule

pytestmark = pytest.mark.usefixtures("one_thread")


def build(path, compile):
    torch.manual_seed(0)
    return GeckoModule(str(path), random_init=True, matryoshka_dims=[32, 16], compile=compile)


def batch(module, words: int, b: int = 4):
    """b triples whose padded lengths grow with `words`, so each call sees a new (B, T)."""
    tok = module.encoder.tokenize
    text = lambda i, n: " ".join(f"word{(i + j) % 7}" for j in range(n))  # noqa: E731
    return {
        "query": dict(tok([f"task: search | query: {text(i, words)}" for i in range(b)])),
        "positive": dict(tok([f"title: none | text: {text(i, 2 * words)}" for i in range(b)])),
        "negative": dict(tok([f"title: none | text: {text(i + 3, 2 * words + 1)}" for i in range(b)])),
    }


def loss_and_grads(module, features):
    module.zero_grad(set_to_none=True)
    loss = module.training_step(features, 0)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_compile_is_off_by_default_and_keeps_parameter_names(tiny_bert):
    eager = GeckoModule(str(tiny_bert), random_init=True)
    compiled = GeckoModule(str(tiny_bert), random_init=True, compile=True)
    assert eager.hparams.compile is False
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints load either way


@pytest.mark.slow
@torch._dynamo.config.patch(error_on_recompile=True)
def test_compiled_step_equals_eager_and_compiles_once_for_three_lengths(no_dropout_bert):
    """The first call compiles; any later one that would compile again (a new length, with static
    shapes or torch.compile's default of specialising the first length) raises instead."""
    torch._dynamo.reset()
    eager, compiled = build(no_dropout_bert, False), build(no_dropout_bert, True)
    first = batch(eager, 3)  # three towers of three lengths already
    want_loss, want_grads = loss_and_grads(eager, first)
    got_loss, got_grads = loss_and_grads(compiled, first)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-6)
    assert got_grads.keys() == want_grads.keys()
    for name, g in want_grads.items():
        torch.testing.assert_close(got_grads[name], g, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")
    for words in (6, 11, 3):  # two more lengths, and the first again
        features = batch(compiled, words)
        got, _ = loss_and_grads(compiled, features)
        want, _ = loss_and_grads(eager, features)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
