"""The MTEB path: the wrapper runs real mteb evaluators with Gecko prompts; offline and typo messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gecko_lightning.encoder import GeckoEncoder
from gecko_lightning.evaluation.cli import main
from gecko_lightning.evaluation.mteb_eval import evaluate_tasks, resolve_tasks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return GeckoEncoder.from_pretrained(REPO / "configs/assets/tiny-bert", random_init=True, max_length=64)


def test_wrapper_runs_mteb_and_writes_its_result_files(encoder, tmp_path, monkeypatch):
    from mteb.mocks.mock_tasks import MockRetrievalTask, MockSTSTask

    seen = []
    real = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts, **kw: seen.extend(texts) or real(texts, **kw))
    summary = evaluate_tasks(encoder, [MockSTSTask(), MockRetrievalTask()], tmp_path, "gecko/tiny", "gecko", dims=[None, 8])
    assert set(summary) == {"MockSTSTask", "MockRetrievalTask", "MockSTSTask@8", "MockRetrievalTask@8"}
    files = sorted(p.name for p in tmp_path.rglob("*.json"))
    assert "MockSTSTask.json" in files and "MockRetrievalTask.json" in files
    stored = json.loads(next(tmp_path.rglob("MockSTSTask.json")).read_text())
    assert stored["task_name"] == "MockSTSTask" and "test" in stored["scores"]
    # STS: query format with the STS task string; retrieval: per-dataset string for queries, title/text for documents
    assert any(t.startswith("task: sentence similarity | query: ") for t in seen)
    assert any(t.startswith("task: search result | query: ") for t in seen)
    assert any(t.startswith("title: ") and " | text: " in t for t in seen)
    # The default asks the model: this one records no format and declares no prompts, so mteb's texts go in as they are
    seen.clear()
    evaluate_tasks(encoder, [MockRetrievalTask()], tmp_path / "default", "gecko/tiny")
    assert seen and not [t for t in seen if t.startswith(("task: ", "title: "))]


def test_unknown_task_name_is_named(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown MTEB task or benchmark 'STSBenchmarkk'"):
        resolve_tasks(["STSBenchmarkk"])
    assert main(["--model", str(tmp_path), "--mteb", "NoSuchTask"]) == 2  # a user error
    assert "unknown MTEB task or benchmark 'NoSuchTask'" in capsys.readouterr().err


@pytest.mark.slow
def test_offline_mteb_says_data_is_not_cached(tmp_path):
    """`gecko eval --mteb STSBenchmark` with HF_HUB_OFFLINE=1 and an empty cache: a clear message, exit 2."""
    model = tmp_path / "model"
    torch.manual_seed(0)
    GeckoEncoder.from_pretrained(REPO / "configs/assets/tiny-bert", random_init=True).save_pretrained(model)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "gecko_lightning", "eval", "--model", str(model), "--mteb", "STSBenchmark",
                          "--mteb-output", str(tmp_path / "mteb")], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]  # a user error
    assert "MTEB data for task 'STSBenchmark' is not cached" in res.stderr
    assert f"HF_HOME={tmp_path / 'hf'}" in res.stderr and "load_data()" in res.stderr
