"""`gecko eval`: score a model on local BEIR/STS/classification files and/or on MTEB.

    gecko eval --model runs/x/last.ckpt --beir data/scifact --sts data/stsbenchmark/sts-test.csv \
        --dims 768 256 --output results.json
    gecko eval --model out/exported --mteb STSBenchmark SciFact --mteb-output results/mteb
    gecko eval rerank --config configs/data/fret_x.yaml --beir data/scifact --output rerank.json
        (the build's LLM re-ranker against the qrels: data_builders/judge.py)
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from pathlib import Path

from gecko_lightning.encoder import CPU_BATCH_TOKENS
from gecko_lightning.errors import debug
from gecko_lightning.evaluation.loaders import EvalDataError, find_splits, load_beir, load_sts, read_labelled
from gecko_lightning.evaluation.models import ModelLoadError, load_encoder
from gecko_lightning.evaluation.prompts import PROMPT_STYLES, PromptMap
from gecko_lightning.evaluation.results import parse_labels, write_results
from gecko_lightning.evaluation import runner


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gecko eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a `gecko fit` .ckpt, an exported/saved folder, or a Hugging Face name")
    p.add_argument("--beir", nargs="+", action="extend", default=[], metavar="DIR", help="BEIR folders: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split to score (qrels/<split>.tsv)")
    p.add_argument("--sts", nargs="+", action="extend", default=[], metavar="FILE", help="STS Benchmark TSV, or csv/tsv/jsonl with s1, s2, score")
    p.add_argument("--classification", nargs="+", action="extend", default=[], metavar="PATH",
                   help="a folder with train.* and test.*, or a test file with a train sibling (text + label columns)")
    p.add_argument("--cls-samples-per-label", type=int, default=8, help="MTEB-style few-shot training size; 0 = whole train split")
    p.add_argument("--cls-experiments", type=int, default=10, help="undersampling repeats averaged (MTEB default 10)")
    p.add_argument("--mteb", nargs="+", action="extend", default=[], metavar="NAME", help="MTEB task or benchmark names (needs the data cached or network)")
    p.add_argument("--mteb-output", default="results/mteb", help="folder for MTEB's own result files")
    p.add_argument("--prompts", choices=PROMPT_STYLES, default="model",
                   help="model: as the model says: the format it records (ours), else the prompts its "
                        "config_sentence_transformers.json declares, else raw text; gecko: the paper's task/title "
                        "formats; none: raw text")
    p.add_argument("--prompt-map", default=None, help="YAML of task strings (default configs/eval/gecko_prompts.yaml)")
    p.add_argument("--dims", nargs="+", type=int, default=None, help="Matryoshka dims to score (truncate + renormalise); default full width")
    p.add_argument("--ignore-identical-ids", action="store_true", help="drop retrieved docs whose id equals the query id (ArguAna/Quora)")
    p.add_argument("--batch-size", type=int, default=64,
                   help=f"texts per batch; on CPU a batch also holds at most {CPU_BATCH_TOKENS:,} padded tokens "
                        "(docs/benchmarks.md, \"Batches by tokens\")")
    p.add_argument("--max-length", type=int, default=None, help="token limit; default the model's own (sentence_bert_config.json)")
    p.add_argument("--output", default=None, help="write {dataset: {metric: score}} (0-100) and a _meta entry to this JSON file")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="stored in the --output file's _meta.labels, e.g. --label variant=tuned --label seed=0; "
                        "`gecko report` groups eval files by them")
    p.add_argument("--wandb", action="store_true", help="log a W&B run of job_type eval: the scores, a table with one row "
                   "per dataset, the model's artifact as its input; offline unless a key is set (docs/tracking.md)")
    p.add_argument("--wandb-project", default="gecko", help="with --wandb: the W&B project")
    p.add_argument("--wandb-dir", default=None, help="with --wandb: the parent of its wandb/ run folder "
                   "(default: the --output file's folder, else the current one)")
    return p


def _suffixed(scores: dict, use_dims: bool) -> dict[str, float]:
    """Flatten {dim: {metric: v}} to {metric[@dim]: v}; plain names when no --dims was given."""
    return {(f"{m}@{d}" if use_dims else m): round(v, 4) for d, per in scores.items() for m, v in per.items()}


def _check_finite(results: dict[str, dict[str, float]]) -> None:
    """A NaN or infinite score is an error: it would print as a number and break standard JSON."""
    for dataset, per in results.items():
        for metric, value in per.items():
            if not math.isfinite(value):
                raise ValueError(f"{dataset}: {metric} is {value}, not a finite score; check the data and the model")


def run_offline(args: argparse.Namespace, encoder) -> dict[str, dict[str, float]]:
    dims = args.dims or [None]
    prompt_map = PromptMap.load(args.prompt_map)
    results: dict[str, dict[str, float]] = {}
    doc_cache: dict = {}  # sets whose corpora format to the same strings encode them once
    for folder in args.beir:
        data = load_beir(folder, args.split)
        scores = _timed(folder, lambda: runner.evaluate_beir(encoder, data, dims, args.prompts, prompt_map, args.batch_size,
                                                             ignore_identical_ids=args.ignore_identical_ids,
                                                             doc_cache=doc_cache))
        results[Path(folder).name] = _suffixed(scores, args.dims is not None)
    for file in args.sts:
        data = load_sts(file)
        task = prompt_map.task_type("STS")
        scores = _timed(file, lambda: runner.evaluate_sts(encoder, data, dims, args.prompts, task, args.batch_size))
        results[Path(file).name] = _suffixed(scores, args.dims is not None)
    for spec in args.classification:
        train, test = (read_labelled(p) for p in find_splits(spec))
        task = prompt_map.task_type("Classification")
        per_label = args.cls_samples_per_label or None
        scores = _timed(spec, lambda: runner.evaluate_classification(encoder, train, test, dims, args.prompts, task, per_label,
                                                                     args.cls_experiments, args.batch_size))
        results[Path(spec).name] = _suffixed(scores, args.dims is not None)
    return results


def _timed(name: str, fn):
    start = time.perf_counter()
    out = fn()
    print(f"[gecko eval] {name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One row per (dataset, metric), aligned, for the terminal."""
    rows = [(ds, m, f"{v:.2f}") for ds, per in results.items() for m, v in per.items()]
    w0 = max([len("dataset")] + [len(r[0]) for r in rows])
    w1 = max([len("metric")] + [len(r[1]) for r in rows])
    lines = [f"{'dataset':<{w0}}  {'metric':<{w1}}  score", f"{'-' * w0}  {'-' * w1}  -----"]
    return "\n".join(lines + [f"{a:<{w0}}  {b:<{w1}}  {c:>5}" for a, b, c in rows])


def main(argv: list[str] | None = None) -> int:
    if argv and argv[0] == "rerank":  # scores a build config, not a model: its own flags
        # By module name, as `gecko build` is dispatched: the trainer's package never imports the builder.
        return importlib.import_module("data_builders.judge").main(argv[1:])
    args = build_parser().parse_args(argv)
    if not (args.beir or args.sts or args.classification or args.mteb):
        print("gecko eval: nothing to evaluate; pass --beir, --sts, --classification and/or --mteb", file=sys.stderr)
        return 2
    from gecko_lightning.evaluation.mteb_eval import MTEBDataUnavailable

    try:
        if args.mteb:  # fail fast on a typo before loading the model
            from gecko_lightning.evaluation.mteb_eval import resolve_tasks

            resolve_tasks(args.mteb)
        labels = parse_labels(args.label)  # a bad label fails before the model loads
        encoder = load_encoder(args.model, args.max_length)
        fmt = runner.input_format(args.prompts, encoder)
        print(f"[gecko eval] {args.model} reads its inputs as {fmt.describe()}", file=sys.stderr)  # which, and why
        results = run_offline(args, encoder)
        if args.mteb:
            results.update(_run_mteb(args, encoder))
        _check_finite(results)
    except (EvalDataError, ModelLoadError, ValueError, FileNotFoundError, MTEBDataUnavailable) as e:
        if debug():
            raise
        print(f"gecko eval: error: {e}", file=sys.stderr)  # bad input: one line and exit 2, like every command
        return 2
    print(format_table(results))
    if args.output:
        # the format used: gecko, plain, custom, sentence-transformers or none
        meta = {"labels": labels, "model": args.model, "prompts": fmt.name, "split": args.split, "dims": args.dims}
        write_results(Path(args.output), results, meta)
        print(f"[gecko eval] wrote {args.output}", file=sys.stderr)
    if args.wandb:
        from gecko_lightning.artifacts import log_eval

        config = {"labels": labels, "model": args.model, "prompts": args.prompts, "split": args.split, "dims": args.dims,
                  "output": args.output}
        log_eval(results, config, args.model, args.wandb_dir or (Path(args.output).parent if args.output else "."), args.wandb_project)
    return 0


def _run_mteb(args: argparse.Namespace, encoder) -> dict[str, dict[str, float]]:
    from gecko_lightning.evaluation.mteb_eval import run_mteb

    name = "gecko/" + Path(args.model.rstrip("/")).name.replace("/", "__")
    return run_mteb(encoder, args.mteb, args.mteb_output, name, args.prompts, PromptMap.load(args.prompt_map),
                    args.dims or [None], args.batch_size)
