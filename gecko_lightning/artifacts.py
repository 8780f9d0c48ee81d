"""W&B artifacts and lineage that work offline: build -> dataset -> fit -> model -> eval.

A run that logs a folder (a FRet build, an exported model) writes `wandb_artifact.json` into it:
the artifact's name, type and content digest. A run that later reads the folder finds that file
and declares the artifact as its input. Online that is `use_artifact`; offline W&B refuses it
("Cannot use artifact when in offline mode"), so the input is recorded in the run's config
(`inputs`) and in `gecko_run.json` beside the run's files, and `gecko sync` declares it after the
upload (gecko_lightning/sync.py). Both paths start from the same record, `input_entry`.

An artifact is referred to by the alias `content-<digest>`: W&B numbers versions (v0, v1, ...)
only when the server commits them, and the content digest is known before any upload.

    resolve_wandb_mode offline unless a W&B key is available (every command's runs, `gecko fit`'s too)
    start_run          wandb.init for a command's own run (build, eval), offline unless a key is set
    log_folder         a folder as an artifact (large files by `file://` reference) + its record
    folder_inputs      the records of the folders a run reads, as config entries
    declare_inputs     use_artifact online; nothing more offline (the config holds them)
    write_run_record   gecko_run.json: job type, artifacts out, inputs
    log_eval           `gecko eval --wandb`'s run
(`gecko_lightning.sync` reads offline run folders back: `offline_graph`.)
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

log = logging.getLogger(__name__)
RECORD = "wandb_artifact.json"  # written into a logged folder, after logging: never part of its artifact
RUN_RECORD = "gecko_run.json"  # written into a run's files folder
# Files above this size are logged by `file://` reference: W&B records their path, size and md5
# (so the version still follows the content) but `wandb sync` uploads none of their bytes.
REFERENCE_ABOVE_MB = 100.0

WandbMode = Literal["online", "offline", "disabled"]
MODES = ("online", "offline", "disabled")


def has_wandb_api_key() -> bool:
    """True when `wandb login` (netrc) or WANDB_API_KEY provides a key; never touches the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str | None = None) -> str:
    """The W&B mode to use: explicit `mode`, else $WANDB_MODE, else offline in CI or without a key, else online."""
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"W&B mode {mode!r} is not one of {MODES}; use offline for air-gapped machines")
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("CI") or not has_wandb_api_key():
        return "offline"
    return "online"


def artifact_name(text: str) -> str:
    """`text` as a W&B artifact name: letters, digits, `-`, `_` and `.` only."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    if not name:
        raise ValueError(f"{text!r} leaves no usable W&B artifact name; name it with letters or digits")
    return name


def content_alias(digest: str) -> str:
    return f"content-{digest}"


def start_run(job_type: str, folder: str | Path, project: str = "gecko", mode: str | None = None,
              name: str | None = None, config: dict[str, Any] | None = None):  # noqa: ANN201 - wandb's Run
    """A run of `job_type` whose files live in `<folder>/wandb/`; offline unless a W&B key is available."""
    import wandb

    Path(folder).mkdir(parents=True, exist_ok=True)  # wandb falls back to /tmp if it is missing
    mode = resolve_wandb_mode(mode)
    run = wandb.init(project=project, job_type=job_type, dir=str(folder), mode=mode, name=name,
                     config=config or {}, reinit="finish_previous")
    if mode == "offline":
        log.info("W&B is offline: the %s run is in %s; upload it later with `gecko sync %s`",
                 job_type, Path(run.dir).parent, Path(run.dir).parent)
    return run


def folder_artifact(folder: Path, name: str, kind: str, files: Iterable[Path], reference_above_mb: float,
                    metadata: dict[str, Any] | None = None):  # noqa: ANN201 - wandb.Artifact
    """An artifact of `files` (inside `folder`, stored under their relative paths), not yet logged.

    Files are added in place (`policy="immutable"`): wandb stages no copy, and `wandb sync` reads them
    from `folder` later, so the folder must stay where it is until then.
    """
    import wandb

    artifact = wandb.Artifact(name, type=kind, metadata=metadata or {})
    for path in sorted(files):
        rel = path.relative_to(folder).as_posix()
        if path.stat().st_size > reference_above_mb * 2**20:
            artifact.add_reference(path.resolve().as_uri(), name=rel, checksum=True)
        else:
            artifact.add_file(str(path.resolve()), name=rel, policy="immutable")
    return artifact


def log_folder(run, folder: str | Path, name: str, kind: str, files: Iterable[Path],
               reference_above_mb: float = REFERENCE_ABOVE_MB, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Log `files` of `folder` as artifact `name` of type `kind` from `run`; write and return its record."""
    folder = Path(folder)
    artifact = folder_artifact(folder, name, kind, files, reference_above_mb, metadata)
    digest = artifact.digest  # the manifest's digest: known before logging, equal after
    run.log_artifact(artifact, aliases=["latest", content_alias(digest)])
    record = {"name": name, "type": kind, "digest": digest, "alias": content_alias(digest),
              "run_id": run.id, "project": run.project, "entity": run.entity or None,
              "references": sorted(e.path for e in artifact.manifest.entries.values() if e.ref)}
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def read_record(folder: str | Path) -> dict[str, Any] | None:
    """The artifact record a tracked run wrote into `folder`, or None (never logged, or not a folder)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable (%s); its folder is not declared as an input", path, e)
        return None


def input_entry(record: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """What a run records about one input: enough for `gecko sync` to find the artifact on the server."""
    return {k: record.get(k) for k in ("name", "type", "digest", "alias", "project", "entity")} | {"path": str(path)}


def folder_inputs(folders: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Input entries of the folders among `folders` that a tracked run logged."""
    return [input_entry(rec, f) for f in folders if (rec := read_record(f)) is not None]


def declare_inputs(run, inputs: list[dict[str, Any]]) -> list[str]:
    """Online: `use_artifact` each input (by its content alias); offline: nothing (the config has them).

    Returns the inputs declared. An input W&B does not know yet (its run is still offline) is skipped
    with a warning: `gecko sync` declares it once that run is uploaded.
    """
    if run is None or getattr(run.settings, "mode", None) in ("offline", "dryrun", "disabled") or not inputs:
        return []
    declared = []
    for entry in inputs:
        project = entry.get("project")  # another project's artifact is named with its project
        ref = f"{project + '/' if project and project != run.project else ''}{entry['name']}:{entry['alias']}"
        try:
            run.use_artifact(ref, type=entry.get("type"))
            declared.append(ref)
        except Exception as e:  # noqa: BLE001 - wandb raises CommError, ValueError, ...; the run must go on
            log.warning("W&B does not know %s yet (%s); `gecko sync` declares it after that run is uploaded", ref, e)
    return declared


def write_run_record(run, job_type: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> Path:
    """gecko_run.json in the run's files folder: what `gecko sync` and `offline_graph` read."""
    path = Path(run.dir) / RUN_RECORD
    record = {"run_id": run.id, "name": run.name, "project": run.project, "entity": run.entity or None, "job_type": job_type,
              "mode": run.settings.mode, "inputs": inputs, "outputs": outputs}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def run_folders(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders (each holds one `.wandb` file) named by, or found under, `paths`, oldest first."""
    found: list[Path] = []
    for p in map(Path, paths):
        candidates = [f.parent for f in p.rglob("*.wandb") if "latest-run" not in f.parts]
        found += [d for d in candidates if d not in found]
    return sorted(found, key=lambda d: d.name)  # offline-run-YYYYMMDD_HHMMSS-ID: by start time


def read_run_record(run_folder: Path) -> dict[str, Any] | None:
    path = run_folder / "files" / RUN_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def log_eval(results: dict[str, dict[str, float]], config: dict[str, Any], model: str, folder: str | Path,
             project: str = "gecko", mode: str | None = None) -> Path:
    """`gecko eval --wandb`: a run of job_type `eval`, `<dataset>/<metric>` in its summary, a table with one
    row per dataset, and the model artifact (the record in the `--model` folder) as its input."""
    import wandb

    inputs = folder_inputs([model]) if Path(model).is_dir() else []
    name = Path(config["output"]).stem if config.get("output") else None  # finetuned_split, base, ...
    run = start_run("eval", folder, project, mode, name=name, config={**config, "inputs": inputs})
    try:
        metrics = sorted({m for per in results.values() for m in per})
        run.summary.update({f"{ds}/{m}": v for ds, per in results.items() for m, v in per.items()})
        rows = [[ds, *(per.get(m) for m in metrics)] for ds, per in results.items()]
        run.log({"datasets": wandb.Table(columns=["dataset", *metrics], data=rows)})
        declare_inputs(run, inputs)
        path = write_run_record(run, "eval", inputs, outputs=[])
    finally:
        run.finish()
    return path
