"""A real embedding server returns the vectors `SentenceTransformer(export).encode` returns.

Two tiny exported models, one CLS-pooled and one mean-pooled (same weights, Matryoshka dims 16 and 8),
are served side by side by vLLM's pooling runner, started as the model card says (no pooling, length
or normalisation flags: vLLM must read them from the folder; `--enforce-eager` only skips a minute of
compiling per server, and the one-process layout of tests/vllm_support.py only the extra processes'
start-up). Checked against `encode`, cosine >= 0.9999:
plain texts; a text longer than the token limit sent with `truncate_prompt_tokens` (and refused
without it); the card's query and document strings against `prompt_name="query"` / `"document"`;
and the request's `dimensions` against `truncate_dim`. Run with `make test-vllm`; skips without vLLM.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from vllm_support import ONE_PROCESS_ENV, ONE_PROCESS_SERVER, VLLMServer, require_vllm

pytestmark = pytest.mark.vllm
TINY_BERT = Path(__file__).resolve().parents[1] / "configs" / "assets" / "tiny-bert"
MAX_LEN, DIMS = 32, [32, 16]
TEXTS = ["A Humdrum Star is the fourth studio album.", "short", "Tides are the rise and fall of sea levels.",
         "Róisín Owens is a Professor in the Department of Chemical Engineering."]
LONG = TEXTS[3] + " " + " ".join(["the moon pulls the oceans toward it while the earth turns"] * 12)
POOLINGS = ("cls", "mean")


def _backbone(tmp: Path) -> Path:
    """The tiny BERT with one 64-wide head (vLLM's CPU attention has no kernel for its 16-wide heads), initialised
    wide enough that texts, prompts and the two poolings give vectors further apart than the 0.9999 bar."""
    folder = tmp / "tiny-bert-64"
    shutil.copytree(TINY_BERT, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(hidden_size=64, num_attention_heads=1, intermediate_size=128, initializer_range=0.2)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _export(backbone: Path, tmp: Path, pooling: str) -> Path:
    import torch

    from gecko_lightning.encoder import GeckoEncoder
    from gecko_lightning.export import export

    torch.manual_seed(0)  # the same weights for both poolings: only the pooling tells the servers apart
    enc = GeckoEncoder.from_pretrained(backbone, random_init=True, projection_dim=None, max_length=MAX_LEN, pooling=pooling)
    enc.save_pretrained(tmp / f"src-{pooling}")
    return export(tmp / f"src-{pooling}", tmp / f"tiny-{pooling}", matryoshka_dims=DIMS)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """{pooling: (exported folder, server)}; both servers start at once to halve the wait."""
    require_vllm()
    tmp = tmp_path_factory.mktemp("serve")
    backbone = _backbone(tmp)
    folders = {p: _export(backbone, tmp, p) for p in POOLINGS}
    servers = {p: VLLMServer(folders[p], f"tiny-{p}", tmp, max_model_len=None, extra=["--runner", "pooling", "--enforce-eager", *ONE_PROCESS_SERVER],
                            env=ONE_PROCESS_ENV) for p in POOLINGS}
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda s: s.start(), servers.values()))
        yield {p: (folders[p], servers[p]) for p in POOLINGS}
    finally:
        for server in servers.values():
            server.stop()


def _embed(server: VLLMServer, texts: list[str], **extra) -> httpx.Response:
    return httpx.post(f"{server.url}/embeddings", json={"model": server.name, "input": texts, **extra}, timeout=120)


def _vectors(server: VLLMServer, texts: list[str], **extra) -> np.ndarray:
    resp = _embed(server, texts, **extra)
    assert resp.status_code == 200, resp.text
    return np.array([d["embedding"] for d in sorted(resp.json()["data"], key=lambda d: d["index"])])


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (n, d) arrays -> (n,)."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _model(folder: Path, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", **kwargs)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_served_vectors_equal_encode(served, pooling):
    folder, server = served[pooling]
    ours, theirs = _model(folder).encode(TEXTS), _vectors(server, TEXTS)
    assert theirs.shape == ours.shape
    assert _cos(theirs, ours).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(theirs, axis=-1), 1.0, atol=1e-5)  # normalised, as encode is
    # the bar means something: distinct texts are further apart than 0.9999, and so are the two poolings
    pairwise = ours @ ours.T / np.outer(np.linalg.norm(ours, axis=-1), np.linalg.norm(ours, axis=-1))
    assert pairwise[~np.eye(len(TEXTS), dtype=bool)].max() < 0.999
    other = served[next(p for p in POOLINGS if p != pooling)][0]
    assert _cos(theirs, _model(other).encode(TEXTS)).min() < 0.999


@pytest.mark.parametrize("pooling", POOLINGS)
def test_long_text_truncates_as_encode(served, pooling):
    folder, server = served[pooling]
    model = _model(folder)
    assert len(model.tokenizer(LONG)["input_ids"]) > MAX_LEN  # encode truncates this text
    assert _embed(server, [LONG]).status_code == 400  # what the card warns of: refused without truncation
    ours = model.encode([LONG])
    assert _cos(_vectors(server, [LONG], truncate_prompt_tokens=MAX_LEN), ours).min() >= 0.9999
    assert _cos(_vectors(server, [LONG], truncate_prompt_tokens=-1), ours).min() >= 0.9999  # -1: the model's limit
    # the bar tells the kept ends apart: keeping the last tokens instead gives another vector
    left = _vectors(server, [LONG], truncate_prompt_tokens=MAX_LEN, truncation_side="left")
    assert _cos(left, ours).max() < 0.999


@pytest.mark.parametrize("pooling", POOLINGS)
def test_card_strings_equal_named_prompts(served, pooling):
    from gecko_lightning.model_card import client_strings
    from gecko_lightning.text_format import GECKO

    folder, server = served[pooling]
    strings = client_strings(GECKO)
    card = (folder / "README.md").read_text()
    assert all(f"`{s.replace('|', chr(92) + '|')}`" in card for s in strings.values())  # the card shows them
    queries, docs = TEXTS[:2], TEXTS[2:]
    model = _model(folder)
    sent = [strings["query"].format(query=q) for q in queries] + [strings["document"].format(text=d) for d in docs]
    theirs = _vectors(server, sent)
    ours = np.concatenate([model.encode(queries, prompt_name="query"), model.encode(docs, prompt_name="document")])
    assert _cos(theirs, ours).min() >= 0.9999
    assert _cos(theirs, model.encode(queries + docs)).max() < 0.999  # the prompts change the vectors


@pytest.mark.parametrize("pooling", POOLINGS)
def test_matryoshka_dimensions(served, pooling):
    folder, server = served[pooling]
    assert json.loads((folder / "config.json").read_text())["matryoshka_dimensions"] == DIMS
    for dim in DIMS:
        theirs = _vectors(server, TEXTS, dimensions=dim)
        assert theirs.shape == (len(TEXTS), dim)
        assert _cos(theirs, _model(folder, truncate_dim=dim).encode(TEXTS)).min() >= 0.9999
