"""`gecko sync RUN_FOLDER...`: upload offline W&B runs, then declare the inputs W&B refused offline.

    gecko sync outputs/demo                      # every run folder under it: build, then fit, then eval
    gecko sync outputs/demo --project my-gecko   # into another project (and --entity)
    gecko sync outputs/demo --dry-run            # the runs, their artifacts and inputs; uploads nothing

Step 1 is plain `wandb sync` of the run folders, producers first (a build before the fits that read
its dataset, a fit before the evals of its model). Step 2 reads each run's `gecko_run.json`
(gecko_lightning/artifacts.py) and, through wandb's public API, declares every input it lists:
`Api().run(...).use_artifact(Api().artifact("NAME:content-DIGEST"))`. The edge build -> fit -> eval then
exists online as if the runs had been online. Step 2 needs a W&B server; it was not run where this
was written (docs/tracking.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gecko_lightning.artifacts import read_run_record, run_folders
from gecko_lightning.errors import UserError
from gecko_lightning.report import _chunks

ORDER = {"build": 0, "fit": 1, "eval": 2}  # producers before consumers; a run without a record counts as a fit


def offline_artifacts(wandb_file: str | Path) -> list[dict[str, Any]]:
    """The artifacts a run file logged: {name, type, digest, aliases, entries: {path: ref or None}}.

    W&B has no public reader for offline run files; this reads the same records `gecko report` reads.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for raw in _chunks(Path(wandb_file).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "artifact":
            a = record.artifact
            out.append({"name": a.name, "type": a.type, "digest": a.digest, "aliases": list(a.aliases),
                        "entries": {c.path: (c.ref or None) for c in a.manifest.contents}})
    return out


def offline_graph(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """One row per run under `paths`: id, job type, artifacts logged (from the run file), inputs (gecko_run.json)."""
    rows = []
    for folder in run_folders(paths):
        record = read_run_record(folder) or {}
        (wandb_file,) = folder.glob("*.wandb")
        rows.append({"run": folder.name, "path": str(folder), "job_type": record.get("job_type"), "name": record.get("name"),
                     "project": record.get("project") or "gecko", "entity": record.get("entity"),
                     "outputs": [a for a in offline_artifacts(wandb_file) if a["type"] != "run_table"],
                     "inputs": record.get("inputs", [])})
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gecko sync", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="RUN_FOLDER", help="run folders, or folders holding them (searched recursively)")
    p.add_argument("--entity", default=None, help="W&B entity for every run (default: each run's own, else your default)")
    p.add_argument("--project", default=None, help="W&B project for every run (default: each run's own)")
    p.add_argument("--dry-run", action="store_true", help="print the runs, their artifacts and inputs; upload nothing")
    return p


def ordered_runs(paths: list[str]) -> list[dict[str, Any]]:
    runs = offline_graph(paths)
    if not runs:
        raise UserError(f"no W&B run folders (holding a .wandb file) under {' '.join(paths)}")
    return sorted(runs, key=lambda r: (ORDER.get(r["job_type"] or "fit", 1), r["run"]))


def describe(runs: list[dict[str, Any]]) -> str:
    """The runs in upload order: job type, artifacts logged, inputs to declare."""
    lines = []
    for r in runs:
        lines.append(f"{r['run']}  job_type={r['job_type'] or '?'}  name={r['name'] or '-'}  {r['path']}")
        lines += [f"    logs  {a['name']} ({a['type']}) digest {a['digest']}" for a in r["outputs"]]
        lines += [f"    uses  {i['name']}:{i['alias']} ({i['type']})" for i in r["inputs"]]
    return "\n".join(lines)


def wandb_sync(folders: list[str], entity: str | None, project: str | None) -> None:
    where = [*(["--entity", entity] if entity else []), *(["--project", project] if project else [])]
    cmd = [sys.executable, "-m", "wandb", "sync", *where, *folders]
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"`{' '.join(cmd[2:])}` failed (see above); nothing was declared, run gecko sync again")


def declare(runs: list[dict[str, Any]], entity: str | None, project: str | None, api=None) -> list[str]:  # noqa: ANN001
    """Step 2: each run's recorded inputs as `use_artifact` edges, through wandb's public API."""
    import wandb

    api = api or wandb.Api()
    done = []
    for r in runs:
        if not r["inputs"]:
            continue
        run_id = r["run"].rsplit("-", 1)[-1]
        where = f"{entity or r['entity'] or api.default_entity}/{project or r['project']}"
        online = api.run(f"{where}/{run_id}")
        for i in r["inputs"]:
            name = f"{entity or i.get('entity') or api.default_entity}/{project or i['project']}/{i['name']}:{i['alias']}"
            online.use_artifact(api.artifact(name, type=i["type"]))
            done.append(f"{where}/{run_id} <- {name}")
    return done


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = ordered_runs(args.paths)
    print(describe(runs))
    if args.dry_run:
        return 0
    wandb_sync([r["path"] for r in runs], args.entity, args.project)
    for line in declare(runs, args.entity, args.project):
        print(f"declared {line}")
    return 0
