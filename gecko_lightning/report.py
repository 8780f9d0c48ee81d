"""`gecko report RUNS_DIR | ENTITY/PROJECT | EVAL.json...`: finished runs -> a Table-2 style Markdown table and a PNG.

    gecko report outputs/sweeps/gecko-ablations                # offline runs (any folder holding wandb/ runs)
    gecko report my-team/gecko-ablations                       # online runs, through the W&B API
    gecko report RUNS --by model.hard_negatives,model.same_tower --metric eval/ndcg_at_10@256
    gecko report base.json seeds/ --output report.md           # `gecko eval --output` files: report_evals.py
    gecko report base.json tuned.json --build outputs/fret     # ... and what the build cost (report_build.py)

Runs are grouped into cells by `--by` (default positive,negative: the FRet variant, read from the
data manifest the run logged, else from the data folder's name), and each cell reports the mean ±
sample std of the metric over its seeds, as in the paper's Table 2 / Figure 4. Offline runs are
read straight from their `.wandb` files (a LevelDB-style log of protobuf records), so no server
and no `wandb sync` are needed. Sources that are not one W&B folder or project are `gecko eval
--output` files, grouped by the labels stored in them (report_evals.py).
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import struct
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gecko_lightning.errors import debug

_BLOCK, _HEADER = 32768, 7  # the .wandb log: 32 KiB blocks, 7-byte chunk headers (crc32, length, type)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
DEFAULT_METRIC = "eval/ndcg_at_10"  # RetrievalEvalCallback: full width; `@d` for smaller Matryoshka dims
METRIC_RE = re.compile(r"^eval/ndcg_at_10@(\d+)$")
VARIANT_RE = re.compile(r"(llm_top1|ql_top1|seed)[-_](lowest|random|none)")
# Paper order: the baseline first (Table 2 reads seed/none, top-1/none, top-1/lowest).
ORDER = {"seed": 0, "llm_top1": 1, "ql_top1": 2, "none": 0, "random": 1, "lowest": 2}
# Keys that legitimately differ between the runs of one cell (seeds, output folders, provenance).
_IGNORED = re.compile(r"(^|\.)(seed|seed_everything|default_root_dir|save_dir|name|tags|group)$|^(git|data_manifest|_wandb)(\.|$)")


def _chunks(data: bytes) -> Iterator[bytes]:
    """Records of a .wandb file; a record may span blocks (FIRST, MIDDLE..., LAST chunks)."""
    if data[:4] != b":W&B":
        raise ValueError("not a W&B run file (no ':W&B' header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        space = _BLOCK - pos % _BLOCK
        if space < _HEADER:  # the tail of a block too short for a header is padding
            pos += space
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk, pos = data[pos + _HEADER : pos + _HEADER + length], pos + _HEADER + length
        if kind == 0:  # zero fill: the end of what a live run has written
            break
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk


def _items(items: Any, into: dict[str, Any]) -> None:
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = into
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = json.loads(item.value_json)


def read_offline_run(path: str | Path) -> dict[str, Any]:
    """A `.wandb` file -> {id, path, config, summary, finished}; summary = the last value of each metric."""
    from wandb.proto import wandb_internal_pb2 as pb

    config, summary, run_id, exit_code = {}, {}, None, None
    for raw in _chunks(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            _items(record.run.config.update, config)
        elif kind == "config":
            _items(record.config.update, config)
        elif kind == "history":
            _items(record.history.item, summary)
        elif kind == "summary":
            _items(record.summary.update, summary)
        elif kind == "exit":
            exit_code = record.exit.exit_code
    config = {k: v.get("value", v) if isinstance(v, dict) and set(v) <= {"value", "desc"} else v for k, v in config.items()}
    return {"id": run_id, "path": str(path), "config": config, "summary": summary, "finished": exit_code == 0}


def offline_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every run file under `folder` (sweep outputs hold one per `run-NNN/wandb/offline-run-*`)."""
    files = sorted(p for p in Path(folder).rglob("*.wandb") if "latest-run" not in p.parts)
    return [read_offline_run(p) for p in files]


def online_runs(project: str) -> list[dict[str, Any]]:
    """Finished runs of `entity/project` through the W&B API (needs `wandb login`)."""
    import wandb

    api = wandb.Api(timeout=60)
    runs = api.runs(project, filters={"state": "finished"})
    return [{"id": r.id, "path": r.url, "config": dict(r.config), "summary": dict(r.summary._json_dict), "finished": True}
            for r in runs]


def dotted(tree: Any, key: str) -> Any:
    """`a.b.c` in a nested dict; W&B sweep runs also hold the flat key `a.b.c` itself."""
    if isinstance(tree, dict) and key in tree:
        return tree[key]
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def data_paths(config: dict[str, Any]) -> list[str]:
    init = dotted(config, "data.init_args") or {}
    paths = [init["path"]] if init.get("path") else []
    return paths + [s["path"] for s in init.get("sources") or [] if isinstance(s, dict) and s.get("path")]


def fret_variant(config: dict[str, Any]) -> tuple[str | None, str | None]:
    """(positive, negative) of the run's FRet data: the builder's manifest, else the folder name."""
    for manifest in (config.get("data_manifest") or {}).values():
        select = (manifest.get("config") or {}).get("select") if isinstance(manifest, dict) else None
        if select:
            return select.get("positive"), select.get("negative")
    for path in data_paths(config):
        match = VARIANT_RE.search(str(path))
        if match:
            return match.group(1), match.group(2)
    return None, None


def value_of(run: dict[str, Any], key: str) -> Any:
    """A grouping value: `positive`, `negative`, `mixture`, `seed`, or any dotted config key."""
    config = run["config"]
    if key in ("positive", "negative"):
        return fret_variant(config)[0 if key == "positive" else 1]
    if key == "mixture":
        sources = dotted(config, "data.init_args.sources")
        return "+".join(s.get("name") or Path(s["path"]).name for s in sources) if sources else "fret"
    if key == "seed":
        return dotted(config, "seed_everything")
    value = dotted(config, key)
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def pick_metric(runs: list[dict[str, Any]], metric: str | None) -> str:
    """`metric`, else the in-training nDCG@10 at full width (`eval/ndcg_at_10`), else at the largest dim logged."""
    if metric:
        return metric
    if any(DEFAULT_METRIC in r["summary"] for r in runs):
        return DEFAULT_METRIC
    dims = {int(m.group(1)) for r in runs for k in r["summary"] if (m := METRIC_RE.match(k))}
    if not dims:
        logged = sorted({k for r in runs for k in r["summary"] if not k.startswith("_")})
        raise ValueError(f"no run logged {DEFAULT_METRIC}; pass --metric, one of {logged}")
    return f"{DEFAULT_METRIC}@{max(dims)}"


def _sort_key(cell: tuple) -> tuple:
    return tuple((ORDER.get(v, 99), str(v)) for v in cell)


def aggregate(runs: list[dict[str, Any]], by: list[str], metric: str) -> list[dict[str, Any]]:
    """One row per cell of `by` values: mean, sample std and count of `metric` over the cell's runs."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if isinstance(run["summary"].get(metric), (int, float)):
            cells[tuple(value_of(run, k) for k in by)].append(run)
    rows = []
    for cell in sorted(cells, key=_sort_key):
        values = [float(r["summary"][metric]) for r in cells[cell]]
        std = statistics.stdev(values) if len(values) > 1 else None
        rows.append({"cell": cell, "values": values, "mean": statistics.fmean(values), "std": std,
                     "seeds": sorted({str(value_of(r, "seed")) for r in cells[cell]}), "mixed": _differing(cells[cell])})
    return rows


def _flat(tree: Any, prefix: str = "") -> dict[str, str]:
    if not isinstance(tree, dict):
        return {prefix: json.dumps(tree, sort_keys=True, default=str)}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}.{key}" if prefix else key).items()}


def _differing(runs: list[dict[str, Any]]) -> list[str]:
    """Config keys (seeds and provenance aside) whose value differs inside one cell: a hint to add them to --by."""
    flats = [_flat(r["config"]) for r in runs]
    keys = set().union(*flats)
    return sorted(k for k in keys if not _IGNORED.search(k) and len({f.get(k) for f in flats}) > 1)


def markdown(rows: list[dict[str, Any]], by: list[str], metric: str) -> str:
    head = [k.replace("_", " ") for k in by] + [f"{metric} (mean ± std)", "runs", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        score = f"{row['mean']:.2f} ± {row['std']:.2f}" if row["std"] is not None else f"{row['mean']:.2f}"
        cells = [str(v) for v in row["cell"]] + [score, str(len(row["values"])), ",".join(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- {'/'.join(map(str, r['cell']))}: its runs also differ in {', '.join(r['mixed'][:6])}"
             for r in rows if r["mixed"]]
    if notes:
        lines += ["", "Cells mixing other settings (add those keys to --by):", *notes]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], by: list[str], metric: str, path: Path) -> Path:
    """Bars = cell means, error bars = std over seeds, dots = the individual runs (Figure 4 style)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    labels = ["\n".join(str(v) for v in r["cell"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1.5), 4.0))
    x = range(len(rows))
    ax.bar(x, [r["mean"] for r in rows], yerr=[r["std"] or 0.0 for r in rows], capsize=4, color="#7aa6c2")
    for i, r in enumerate(rows):
        ax.scatter([i] * len(r["values"]), r["values"], color="black", s=10, zorder=3)
    ax.set_xticks(list(x), labels)
    ax.set_xlabel(" / ".join(by))
    ax.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def collect(source: str) -> list[dict[str, Any]]:
    """Finished runs from a folder of offline runs, or from `entity/project` on W&B."""
    if Path(source).is_dir():
        return [r for r in offline_runs(source) if r["finished"]]
    if Path(source).exists() or source.count("/") != 1:
        raise ValueError(f"{source!r} is neither a folder of W&B runs nor an entity/project name")
    return online_runs(source)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gecko report", description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a folder holding offline W&B runs, entity/project on "
                   "W&B, or `gecko eval --output` JSON files, folders of them and globs")
    p.add_argument("--by", default=None, help="comma-separated cell keys. W&B runs: positive, negative, mixture, seed "
                   "or any dotted config key (default: positive,negative). Eval files: their --label keys (default: variant)")
    p.add_argument("--metric", help="W&B runs: summary metric (default: eval/ndcg_at_10, the full-width in-training nDCG@10)")
    p.add_argument("--base", default="base", help="eval files: the cell the others are compared with (default: base)")
    p.add_argument("--output", help="write the Markdown table to this file and the PNG beside it (same name, .png)")
    p.add_argument("--build", action="append", default=[], metavar="DIR", help="eval files: a `gecko build fret` "
                   "output_dir whose cost (minutes and LLM calls per stage, training records, test split) follows the table")
    p.add_argument("--out", help="W&B runs: folder for report.md and report.png (default: the runs folder, or outputs/report)")
    return p


def is_eval_source(sources: list[str]) -> bool:
    """Eval files unless the one source is a folder holding .wandb run files or looks like entity/project."""
    if len(sources) > 1 or sources[0].endswith(".json") or Path(sources[0]).is_file():
        return True
    folder = Path(sources[0])
    return not any(folder.rglob("*.wandb")) if folder.is_dir() else glob.has_magic(sources[0])


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if is_eval_source(args.sources):
            from gecko_lightning.report_evals import report

            output = args.output or (f"{args.out}/report.md" if args.out else None)
            print(report(args.sources, _keys(args.by or "variant"), args.base, output, args.build))
            return 0
        return _report_runs(args)
    except ValueError as e:  # UserError included: one line, exit 2, like every command
        if debug():
            raise
        print(f"gecko report: error: {e}", file=sys.stderr)
        return 2


def _keys(by: str) -> list[str]:
    return [k for k in by.split(",") if k]


def _report_runs(args: argparse.Namespace) -> int:
    source, by = args.sources[0], _keys(args.by or "positive,negative")
    runs = collect(source)
    if not runs:
        raise ValueError(f"no finished runs under {source!r}")
    metric = pick_metric(runs, args.metric)
    rows = aggregate(runs, by, metric)
    md = Path(args.output) if args.output else Path(args.out or (source if Path(source).is_dir() else "outputs/report")) / "report.md"
    md.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, by, metric)
    md.write_text(text)
    print(text + f"\n{len(runs)} finished runs; wrote {md} and {plot(rows, by, metric, md.with_suffix('.png'))}")
    return 0
