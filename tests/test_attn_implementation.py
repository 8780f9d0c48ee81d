"""model.attn_implementation reaches the backbone, and every choice gives the same embeddings."""

from __future__ import annotations

import pytest
import torch

from gecko_lightning.errors import UserError
from gecko_lightning.module import GeckoModule

pytestmark = pytest.mark.usefixtures("one_thread")


def _embed(path, attn):
    torch.manual_seed(0)
    module = GeckoModule(str(path), random_init=True, attn_implementation=attn).eval()
    feats = module.encoder.tokenize(["a short one", "a much longer text with many more words in it than the first"])
    with torch.no_grad():
        return module, module.embed(feats)


def test_eager_and_sdpa_are_selected_and_agree(no_dropout_bert):
    eager, e = _embed(no_dropout_bert, "eager")
    sdpa, s = _embed(no_dropout_bert, "sdpa")
    assert eager.encoder.backbone.config._attn_implementation == "eager"
    assert sdpa.encoder.backbone.config._attn_implementation == "sdpa"
    assert torch.allclose(e, s, atol=1e-5)


def test_an_unavailable_implementation_is_one_clear_error(no_dropout_bert):
    with pytest.raises(UserError, match=r"model.attn_implementation='no_such_attention' cannot be used with .*use sdpa or eager"):
        GeckoModule(str(no_dropout_bert), random_init=True, attn_implementation="no_such_attention")
