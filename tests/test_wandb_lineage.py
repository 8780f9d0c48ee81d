"""W&B lineage offline: build -> dataset artifact -> fit -> model artifact -> eval, on the tiny configs.

One module-scoped pipeline (the demo's code path: tracked build with a test split, a fit that exports
its model, an eval of that model on the split) and one untracked build of the same config. The checks
read what the offline run folders hold: the `.wandb` files (through the same protobuf records
`gecko report` reads), the table files, `gecko_run.json`, against references the test computes itself
from the build's shards and folders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_builders import cli as build_cli
from gecko_lightning import sync
from gecko_lightning.artifacts import RECORD, RUN_RECORD
from gecko_lightning.sync import offline_artifacts
from gecko_lightning.evaluation.cli import main as eval_main
from gecko_lightning.lightning_cli import run_lightning_cli
from gecko_lightning.report import read_offline_run

REPO = Path(__file__).resolve().parents[1]
BUILD = ["fret", "--config", "configs/data/fret_tiny.yaml", "--test_split.fraction=0.25"]
REFERENCE_ABOVE_MB = 0.004  # 4 KiB: the tiny build has files on both sides of it
TIMINGS = ("wall_s", "wall_time_s", "llm_load_s", "llm_calls_per_s")


def _finish():
    import wandb

    wandb.finish()
    wandb.teardown()  # flushes the run files before the test reads them


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    out = tmp_path_factory.mktemp("lineage")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        for var in ("WANDB_API_KEY", "CI", "NETRC", "WANDB_DIR"):
            mp.delenv(var, raising=False)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("HOME", str(out / "home"))  # wandb's staging and logs, never the user's
        assert build_cli.main([*BUILD, "--output_dir", str(out / "fret"), "--tracking.wandb=true",
                               f"--tracking.reference_above_mb={REFERENCE_ABOVE_MB}"]) == 0
        assert build_cli.main([*BUILD, "--output_dir", str(out / "plain")]) == 0
        try:
            run_lightning_cli(["fit", "--config", "configs/tiny.yaml", "--trainer.accelerator=cpu", "--trainer.max_steps=2",
                               f"--data.init_args.path={out / 'fret'}", "--data.init_args.batch_size=4",
                               f"--trainer.default_root_dir={out / 'fit'}", f"--trainer.logger.export_model={out / 'model'}"])
        finally:
            _finish()
        assert eval_main(["--model", str(out / "model"), "--beir", str(out / "fret" / "test"),
                          "--output", str(out / "eval" / "scores.json"), "--wandb"]) == 0
    return out


def _run_folder(parent: Path) -> Path:
    (run_file,) = (parent / "wandb").glob("offline-run-*/*.wandb")
    return run_file.parent


def _run(parent: Path) -> tuple[dict, list[dict], dict]:
    folder = _run_folder(parent)
    (run_file,) = folder.glob("*.wandb")
    record = json.loads((folder / "files" / RUN_RECORD).read_text())
    return read_offline_run(run_file), offline_artifacts(run_file), record


def _table(parent: Path, key: str) -> dict:
    (path,) = (_run_folder(parent) / "files" / "media" / "table").glob(f"{key}_*.table.json")
    return json.loads(path.read_text())


def _scores(meta: dict, pid: str | None) -> list:
    cand = next((c for c in meta["candidates"] if c["id"] == pid), {})
    return [cand.get("ql"), cand.get("rc"), cand.get("fused")]


def test_build_run_holds_the_records_table_summary_and_dataset_artifact(pipeline):
    fret = pipeline / "fret"
    run, artifacts, record = _run(fret)
    manifest = json.loads((fret / "manifest.json").read_text())
    assert run["finished"] and run["config"]["select"]["negative"] == "lowest" and record["job_type"] == "build"
    assert run["summary"]["records"] == manifest["records"] > 0
    assert run["summary"]["llm_calls/rerank"] == manifest["llm_calls"]["rerank"] > 0
    assert run["summary"]["minutes/generate"] == round(manifest["wall_time_s"]["generate"] / 60, 4)
    # The table's rows, rebuilt here from the shard's raw JSON lines.
    lines = [json.loads(x) for x in (fret / "shard-00000.jsonl").read_text().splitlines()]
    expected = [[r["id"], r["meta"]["task_type"], r["task"], r["query"], r["positive"]["text"],
                 (r.get("negative") or {}).get("text"), r["meta"]["positive_id"] == r["meta"]["seed_id"],
                 *_scores(r["meta"], r["meta"]["positive_id"]), *_scores(r["meta"], r["meta"]["negative_id"])] for r in lines]
    table = _table(fret, "records_sample")
    assert table["columns"][:6] == ["id", "task_type", "task", "query", "positive", "negative"]
    assert table["data"] == expected and len(expected) == manifest["records"]
    # The dataset artifact: what training and eval read, big files by reference; no cache, index or run folder.
    (dataset,) = [a for a in artifacts if a["type"] == "dataset"]
    on_disk = {p.relative_to(fret).as_posix(): p.stat().st_size for p in fret.rglob("*") if p.is_file()}
    kept = {k: v for k, v in on_disk.items() if k.split("/")[0] in ("manifest.json", "stages", "test", "candidates")
            or k.startswith("shard-")}
    assert set(dataset["entries"]) == set(kept) and "test/qrels/test.tsv" in kept
    assert not any(k.startswith(("wandb/", "index/")) or k.endswith(".sqlite") or k == RECORD for k in dataset["entries"])
    by_ref = {k for k, size in kept.items() if size > REFERENCE_ABOVE_MB * 2**20}
    assert by_ref and by_ref != set(kept)
    assert {k for k, ref in dataset["entries"].items() if ref} == by_ref
    assert all(dataset["entries"][k] == (fret / k).resolve().as_uri() for k in by_ref)
    logged = json.loads((fret / RECORD).read_text())
    assert (dataset["name"], dataset["digest"]) == ("fret", logged["digest"])
    assert f"content-{logged['digest']}" in dataset["aliases"] and record["outputs"][0]["digest"] == logged["digest"]


def test_a_build_without_tracking_logs_nothing_and_writes_the_same_files(pipeline):
    plain, tracked = pipeline / "plain", pipeline / "fret"
    files = sorted(p.relative_to(plain).as_posix() for p in plain.rglob("*") if p.is_file())
    assert not (plain / "wandb").exists() and not (plain / RECORD).exists()
    extra = {"wandb", RECORD}
    assert files == sorted(p.relative_to(tracked).as_posix() for p in tracked.rglob("*")
                           if p.is_file() and p.relative_to(tracked).parts[0] not in extra)
    for name in files:
        if name.endswith(".jsonl") or name.endswith(".tsv"):
            assert (plain / name).read_bytes() == (tracked / name).read_bytes(), name

    def untimed(tree):
        if isinstance(tree, dict):
            return {k: untimed(v) for k, v in tree.items() if k not in TIMINGS}
        return tree

    # The same but for timings and the folder's own path (config.output_dir, the index folder).
    a, b = (json.loads((d / "manifest.json").read_text().replace(str(d), "OUT")) for d in (plain, tracked))
    assert "tracking" not in a["config"] and untimed(a) == untimed(b)


def test_fit_records_the_dataset_input_and_logs_the_exported_model(pipeline):
    run, artifacts, record = _run(pipeline / "fit")
    built = json.loads((pipeline / "fret" / RECORD).read_text())
    (entry,) = run["config"]["inputs"]
    assert (entry["name"], entry["type"], entry["digest"]) == ("fret", "dataset", built["digest"])
    assert entry["alias"] == f"content-{built['digest']}" and record["inputs"] == [entry]
    (model,) = [a for a in artifacts if a["type"] == "model"]
    exported = json.loads((pipeline / "model" / RECORD).read_text())
    assert model["name"] == exported["name"] == f"model-{run['id']}" and model["digest"] == exported["digest"]
    files = {p.relative_to(pipeline / "model").as_posix() for p in (pipeline / "model").rglob("*") if p.is_file()}
    assert set(model["entries"]) == files - {RECORD} and "model.safetensors" in files
    assert [o["name"] for o in record["outputs"]] == [model["name"]]


def test_eval_records_the_model_input_and_one_table_row_per_dataset(pipeline):
    run, artifacts, record = _run(pipeline / "eval")
    exported = json.loads((pipeline / "model" / RECORD).read_text())
    (entry,) = run["config"]["inputs"]
    assert (entry["name"], entry["type"], entry["digest"]) == (exported["name"], "model", exported["digest"])
    assert record["job_type"] == "eval" and not [a for a in artifacts if a["type"] not in ("run_table",)]
    scores = {k: v for k, v in json.loads((pipeline / "eval" / "scores.json").read_text()).items() if k != "_meta"}
    assert {f"{ds}/{m}": v for ds, per in scores.items() for m, v in per.items()} == {
        k: v for k, v in run["summary"].items() if "/" in k and not k.startswith("_") and k.split("/")[0] in scores}
    table = _table(pipeline / "eval", "datasets")
    assert [row[0] for row in table["data"]] == list(scores) == ["test"]
    assert dict(zip(table["columns"][1:], table["data"][0][1:])) == scores["test"]


class _FakeApi:
    default_entity = "me"

    def __init__(self):
        self.used = []

    def run(self, path):
        return type("Run", (), {"use_artifact": lambda _, art: self.used.append((path, art))})()

    def artifact(self, name, type=None):  # noqa: A002 - wandb's own keyword
        return f"{name} [{type}]"


def test_sync_uploads_producers_first_then_declares_the_recorded_inputs(pipeline, monkeypatch, capsys):
    calls, api = [], _FakeApi()
    monkeypatch.setattr(sync.subprocess, "run", lambda cmd: calls.append(cmd) or type("P", (), {"returncode": 0})())
    monkeypatch.setattr("wandb.Api", lambda: api)
    assert sync.main([str(pipeline)]) == 0
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "wandb", "sync"]
    assert cmd[4:] == [str(_run_folder(pipeline / d)) for d in ("fret", "fit", "eval")]
    fit_id, eval_id = (_run_folder(pipeline / d).name.rsplit("-", 1)[1] for d in ("fit", "eval"))
    data, model = (json.loads((pipeline / d / RECORD).read_text()) for d in ("fret", "model"))
    assert api.used == [(f"me/gecko/{fit_id}", f"me/gecko/fret:content-{data['digest']} [dataset]"),
                        (f"me/gecko/{eval_id}", f"me/gecko/{model['name']}:content-{model['digest']} [model]")]


class _FakeRun:
    def __init__(self, mode, project="gecko", known=()):
        self.settings, self.project, self.known, self.used = type("S", (), {"mode": mode})(), project, known, []

    def use_artifact(self, ref, type=None):  # noqa: A002 - wandb's own keyword
        if ref not in self.known:
            raise ValueError(f"artifact {ref} not found")
        self.used.append((ref, type))


def test_online_runs_use_the_recorded_artifacts_and_offline_runs_only_record_them(caplog):
    from gecko_lightning.artifacts import declare_inputs

    inputs = [{"name": "fret", "type": "dataset", "alias": "content-ab", "project": "gecko"},
              {"name": "nq", "type": "dataset", "alias": "content-cd", "project": "other"},
              {"name": "late", "type": "dataset", "alias": "content-ef", "project": "gecko"}]
    online = _FakeRun("online", known=("fret:content-ab", "other/nq:content-cd"))
    assert declare_inputs(online, inputs) == ["fret:content-ab", "other/nq:content-cd"]
    assert online.used == [("fret:content-ab", "dataset"), ("other/nq:content-cd", "dataset")]
    assert "W&B does not know late:content-ef yet" in caplog.text and "gecko sync" in caplog.text
    offline = _FakeRun("offline", known=("fret:content-ab",))
    assert declare_inputs(offline, inputs) == [] and offline.used == []
