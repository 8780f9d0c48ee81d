"""`gecko report EVAL.json ... | FOLDER`: `gecko eval --output` files -> base against variants, over seeds.

    gecko eval --model base --beir data/scifact --label variant=base --output runs/base.json
    gecko eval --model out/s0 --beir data/scifact --label variant=tuned --label seed=0 --output runs/tuned-s0.json
    gecko report runs/ --output runs/report.md          # also: explicit files, or globs such as 'runs/*/eval*.json'

Each file says what it is through the labels `gecko eval --label` stored in it (evaluation/results.py),
so file names and folders carry no meaning. Files with equal `--by` labels (default: variant) form a
cell; within a cell, files with the same `seed` label are one run, and their datasets are merged (a
retrieval eval and an STS eval of one model, say). Every (dataset, metric) found becomes a row with
the mean ± sample std over each cell's runs and the difference from the `--base` cell's mean.
The W&B sibling is report.py, which also dispatches here.
"""

from __future__ import annotations

import glob
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from gecko_lightning.errors import UserError
from gecko_lightning.evaluation.results import META, read_results

QRELS = "qrels"  # the label that names where a file's relevance labels came from (read_eval)
LLM_NOTE = ("Rows marked (qrels: llm) score the build's held-out test split (`gecko build fret`, "
            "`<output_dir>/test/`): its queries and relevance labels come from the build's LLM, not from people, "
            "so they measure agreement with that LLM (docs/fret.md, \"The test split\").")
_MAX_BYTES = 1_000_000  # eval outputs are a few KB; skip tokenizers and the like unread when scanning folders


def eval_files(sources: list[str]) -> list[Path]:
    """Named files, every eval output under named folders (other JSONs skipped), and glob matches."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = [p for p in sorted(path.rglob("*.json")) if _is_eval_output(p)]
            if not found:
                raise UserError(f"no finished runs under {source!r}: it holds neither W&B run files (*.wandb) "
                                "nor `gecko eval --output` JSON files (with a _meta entry); pass eval files or a runs folder")
            files += found
        elif path.is_file():
            files.append(path)
        elif glob.has_magic(source):
            matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
            if not matches:
                raise UserError(f"{source!r} matches no file; check the pattern (quote it so the shell does not expand it)")
            files += matches
        else:
            raise UserError(f"{source}: no such file or folder; pass `gecko eval --output` files, folders of them or a glob")
    return list(dict.fromkeys(files))  # a file named twice counts once


def _is_eval_output(path: Path) -> bool:
    if path.stat().st_size > _MAX_BYTES:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and META in data


def read_eval(path: Path) -> dict[str, Any]:
    """{path, labels, prompts, scores}: scores keyed by (dataset, metric); `labels` are required.

    A `qrels` label says where the file's relevance labels came from, so it names the datasets, not
    the run: `--label qrels=llm` on a `gecko build fret` test split makes its rows `test (qrels: llm)`.
    """
    scores, meta = read_results(path)
    if not meta.get("labels"):
        raise UserError(f"{path}: has no labels, so its variant is unknown; re-run gecko eval with --label variant=NAME "
                        f'[--label seed=K], or add "{META}": {{"labels": {{"variant": "NAME"}}}} to the file')
    labels = {k: str(v) for k, v in meta["labels"].items()}
    source = labels.pop(QRELS, None)
    name = (lambda ds: f"{ds} ({QRELS}: {source})") if source else (lambda ds: ds)
    return {"path": path, "labels": labels, "prompts": meta.get("prompts"), "qrels": source,
            "scores": {(name(ds), m): float(v) for ds, per in scores.items() for m, v in per.items()}}


def group(evals: list[dict[str, Any]], by: list[str]) -> dict[tuple, dict[str, dict[str, Any]]]:
    """cell (the `by` labels) -> seed -> run {scores, prompts per dataset, files, labels}."""
    cells: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    for ev in evals:
        missing = [k for k in by if k not in ev["labels"]]
        if missing:
            raise UserError(f"{ev['path']}: no {missing[0]!r} label to group by (--by {','.join(by)}); its labels are "
                            f"{sorted(ev['labels'])}: pick --by from them or re-run gecko eval with --label {missing[0]}=VALUE")
        cell = tuple(ev["labels"][k] for k in by)
        run = cells[cell].setdefault(ev["labels"].get("seed", "-"), {"scores": {}, "prompts": {}, "files": {}, "labels": []})
        for key, value in ev["scores"].items():
            if key in run["scores"]:
                raise UserError(f"{'/'.join(key)} of {'/'.join(cell)} seed {ev['labels'].get('seed', '-')} is in both "
                                f"{run['files'][key]} and {ev['path']}; label them apart (--label KEY=VALUE) and add KEY to --by")
            run["scores"][key], run["files"][key], run["prompts"][key[0]] = value, ev["path"], ev["prompts"]
        run["labels"].append(ev["labels"])
    return cells


def summarize(cells: dict[tuple, dict[str, dict[str, Any]]], base: str) -> tuple[list[tuple], list[tuple], dict]:
    """(columns: base first, rows: (dataset, metric) in order of first appearance, stats[(row, col)])."""
    columns = sorted(cells, key=lambda c: ("/".join(c) != base, c))
    rows = list(dict.fromkeys(k for c in columns for run in cells[c].values() for k in run["scores"]))
    stats = {}
    for col in columns:
        for row in rows:
            values = [run["scores"][row] for run in cells[col].values() if row in run["scores"]]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else None
                stats[row, col] = {"values": values, "mean": statistics.fmean(values), "std": std}
    return columns, rows, stats


def _prompts(cells: dict, columns: list[tuple], dataset: str) -> str:
    """The prompt style of each column for this dataset, collapsed to one when all agree."""
    styles = [",".join(sorted({r["prompts"][dataset] or "?" for r in cells[c].values() if dataset in r["prompts"]})) or "-"
              for c in columns]
    return styles[0] if len(set(styles)) == 1 else " / ".join(styles)


def _mixed(cells: dict, columns: list[tuple], by: list[str]) -> list[str]:
    """Labels other than `by` and seed that differ inside a cell: a hint to add them to --by."""
    notes = []
    for col in columns:
        labels = [lab for run in cells[col].values() for lab in run["labels"]]
        keys = sorted({k for lab in labels for k in lab} - set(by) - {"seed"})
        differ = [k for k in keys if len({lab.get(k) for lab in labels}) > 1]
        if differ:
            notes.append(f"- {'/'.join(col)}: its files also differ in {', '.join(differ)} (add to --by)")
    return notes


def _score(stat: dict | None, runs: int) -> str:
    """`mean ± std`, `mean` for one run, `-` for none; `(n=k)` when fewer runs than the column has scored it."""
    if stat is None:
        return "-"
    text = f"{stat['mean']:.2f} ± {stat['std']:.2f}" if stat["std"] is not None else f"{stat['mean']:.2f}"
    return text + (f" (n={len(stat['values'])})" if len(stat["values"]) < runs else "")


def _seed_order(seed: str) -> tuple:
    return (not seed.isdigit(), int(seed) if seed.isdigit() else 0, seed)  # 2 before 10


def markdown(cells: dict, by: list[str], base: str) -> str:
    """| dataset | metric | prompts | base | variant | Δ variant | ...; Δ columns only when the base cell exists."""
    columns, rows, stats = summarize(cells, base)
    has_base = "/".join(columns[0]) == base
    head = ["dataset", "metric", "prompts"]
    for i, col in enumerate(columns):
        n = len(cells[col])
        head.append("/".join(col) + (f" ({n} seeds)" if n > 1 else ""))
        if has_base and i:
            head.append(f"Δ {'/'.join(col)}")
    lines = ["| " + " | ".join(head) + " |", "| --- | --- | --- |" + " ---: |" * (len(head) - 3)]
    for row in rows:
        cells_md = [row[0], row[1], _prompts(cells, columns, row[0])]
        for i, col in enumerate(columns):
            cells_md.append(_score(stats.get((row, col)), len(cells[col])))
            if has_base and i:
                b, v = stats.get((row, columns[0])), stats.get((row, col))
                cells_md.append(f"{v['mean'] - b['mean']:+.2f}" if b and v else "-")
        lines.append("| " + " | ".join(cells_md) + " |")
    seeds = "; ".join(f"{'/'.join(c)} {','.join(sorted(cells[c], key=_seed_order))}" for c in columns)
    lines += ["", f"Cells ({' / '.join(by)}) and seeds: {seeds}. Mean ± sample std over seeds."]
    if not has_base:
        lines.append(f"No cell is named {base!r}, so there is no Δ column; pass --base with one of "
                     f"{['/'.join(c) for c in columns]}.")
    return "\n".join(lines + _mixed(cells, columns, by)) + "\n"


def headlines(rows: list[tuple]) -> list[tuple]:
    """(dataset, metric) per dataset of summarize's rows: its first metric, the evaluator's headline."""
    first: dict[str, tuple] = {}
    for dataset, metric in rows:
        first.setdefault(dataset, (dataset, metric))
    return list(first.values())


def _against_base(columns: list[tuple], rows: list[tuple], stats: dict, base: str) -> dict[tuple, dict[tuple, dict]]:
    if not columns or "/".join(columns[0]) != base:
        return {}
    out: dict[tuple, dict[tuple, dict]] = {}
    for row in headlines(rows):
        ref = stats.get((row, columns[0]))
        for col in columns[1:]:
            s = stats.get((row, col))
            if ref and s:
                out.setdefault(row, {})[col] = {"mean": s["mean"] - ref["mean"], "std": s["std"],
                                                "values": [v - ref["mean"] for v in s["values"]]}
    return out


def deltas(cells: dict, base: str) -> dict[tuple, dict[tuple, dict]]:
    """What the plot draws against zero: {(dataset, metric): {column: {"mean", "std", "values"}}} where mean is
    the column's mean minus the base's, std the column's spread over its seeds (None for one run) and values
    each run minus the base's mean; {} when no cell is the base."""
    return _against_base(*summarize(cells, base), base)


def plot(cells: dict, base: str, path: Path) -> Path:
    """Each dataset's headline metric. With a base cell: each other cell's difference from it, a bar from zero
    with the seeds' spread as error bar and a dot per run (a one-point change is invisible on a 0-100 scale);
    without one: the scores themselves."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    columns, rows, stats = summarize(cells, base)
    heads = headlines(rows)
    diff = _against_base(columns, rows, stats, base)
    if diff:
        columns = columns[1:]
        stats = {(row, col): s for row, per_col in diff.items() for col, s in per_col.items()}
    width = 0.8 / max(1, len(columns))
    fig, ax = plt.subplots(figsize=(2.0 + 1.2 * len(heads) * max(1, len(columns) / 2), 3.8))
    for j, col in enumerate(columns):
        xs = [i + (j - (len(columns) - 1) / 2) * width for i in range(len(heads))]
        got = [stats.get((row, col)) for row in heads]
        ax.bar(xs, [s["mean"] if s else 0.0 for s in got], width=width, yerr=[(s["std"] or 0.0) if s else 0.0 for s in got],
               capsize=3, label="/".join(col))
        for x, s in zip(xs, got):
            if s:
                ax.scatter([x] * len(s["values"]), s["values"], color="black", s=8, zorder=3)
                if diff:
                    top = max([s["mean"] + (s["std"] or 0.0), *s["values"]]) if s["mean"] >= 0 else \
                        min([s["mean"] - (s["std"] or 0.0), *s["values"]])
                    ax.annotate(f"{s['mean']:+.2f}", (x, top), xytext=(0, 3 if s["mean"] >= 0 else -9),
                                textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(heads)), [f"{d}\n{m}" for d, m in heads], fontsize=8)
    if diff:
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"difference from {base} (points)")
        ax.margins(y=0.15)
    else:
        ax.set_ylabel("score (0-100)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncols=min(len(columns), 4), frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # "tight" keeps the legend below the axes
    plt.close(fig)
    return path


def report(sources: list[str], by: list[str], base: str, output: str | None, builds: list[str] = ()) -> str:
    """The Markdown table (returned), and with `output` the table there and the PNG beside it (.png).

    `builds`: FRet build folders whose cost (minutes and LLM calls per stage, records) follows the table.
    """
    from gecko_lightning.report_build import cost_markdown

    evals = [read_eval(p) for p in eval_files(sources)]
    cells = group(evals, by)
    costs = [cost_markdown(b) for b in builds]  # a bad folder fails before anything is written
    text = markdown(cells, by, base)
    if any(ev["qrels"] == "llm" for ev in evals):
        text += "\n" + LLM_NOTE + "\n"
    text += "".join("\n" + c for c in costs)
    runs = sum(len(seeds) for seeds in cells.values())
    note = f"\n{len(evals)} gecko eval file(s), {runs} run(s)"
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        note += f"; wrote {out} and {plot(cells, base, out.with_suffix('.png'))}"
    return text + note
