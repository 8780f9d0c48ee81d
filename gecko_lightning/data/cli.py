"""`gecko data validate|convert|chunk`: check a schema dataset, turn a public dataset into one, or cut
a folder of documents into the passages a FRet build reads.

    gecko data validate DATA [DATA ...]
    gecko data convert snli --source ../shared/data/snli_senteval --split dev --out data/snli
    gecko data convert classification --source ../shared/data/banking77/train.csv \\
        --text-column text --label-column category --task "Classify the intent of a banking query" --out data/b77
    gecko data convert beir --source ../shared/data/scifact --split train --out data/scifact
    gecko data chunk docs/ --out passages.jsonl [--config configs/data/x.yaml] [--corpus.chunk_tokens=200]

`convert` without --source reads the converter's Hub dataset (online). `chunk` takes every build
config key (`gecko data chunk --help`); it is data_builders.chunk, dispatched by module name.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from itertools import islice
from pathlib import Path

from gecko_lightning.data.schema import ReadStats, iter_records, read_manifest, write_manifest, write_records

FORMATS = ("jsonl", "jsonl.gz", "parquet")


def validate(path: str, out=None) -> int:
    """Print count, source and task distribution and every problem (file:line); 1 if any record is bad."""
    from tqdm import tqdm

    out = out or sys.stdout
    stats, ids = ReadStats(), Counter()
    try:
        manifest = read_manifest(path) if Path(path).is_dir() else {}
        records = iter_records(path, on_error="skip", stats=stats)
        for record in tqdm(records, desc=f"validate {path}", unit=" records", leave=False, disable=None):
            ids[record.id] += 1
    except (FileNotFoundError, ValueError) as e:
        print(f"{path}: {e}", file=out)
        return 1
    problems = stats.skipped + _manifest_problems(path, manifest, stats.records + len(stats.skipped))
    if not stats.records and not problems:
        problems.append(f"{path}: holds no records; check that the build or conversion that wrote it finished")
    print(f"{path}: {stats.records} valid records, {len(stats.skipped)} invalid", file=out)
    for title, counter in (("sources", stats.sources), ("tasks", stats.tasks)):
        print(f"  {title}:", file=out)
        for key, count in counter.most_common():
            print(f"    {count:>8}  {key}", file=out)
    duplicates = {i: n for i, n in ids.items() if n > 1}
    if duplicates:
        print(f"  warning: {len(duplicates)} ids occur more than once, e.g. {next(iter(duplicates))!r}", file=out)
    for problem in problems:
        print(f"  error: {problem}", file=out)
    return 1 if problems or stats.records == 0 else 0


def _manifest_problems(path: str, manifest: dict, rows: int) -> list[str]:
    """A manifest whose record count disagrees with the shards means a lost or extra shard."""
    expected = manifest.get("records")
    if isinstance(expected, int) and expected != rows:
        return [f"{path}/manifest.json: says {expected} records, the shards hold {rows}"]
    return []


def _convert_parser(sub) -> None:
    from gecko_lightning.data.converters import CONVERTERS

    p = sub.add_parser("convert", help="convert a public dataset into schema records")
    p.add_argument("converter", choices=sorted(CONVERTERS))
    p.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--source", help="local file/folder, save_to_disk folder, or Hub name (default: the converter's)")
    p.add_argument("--split", default="train")
    p.add_argument("--config", help="Hub config, e.g. the MIRACL language")
    p.add_argument("--name", default="", help="the records' source field (default: the converter name)")
    p.add_argument("--task", help="task string (default: the paper-style one for the converter)")
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of positives and negatives")
    for col in ("query", "text", "title", "label", "negative"):
        p.add_argument(f"--{col}-column", help=f"name of the {col} column")
    p.add_argument("--delimiter", help="column separator of a local text file (default ',' for .csv, tab otherwise)")
    p.add_argument("--column-names", help="comma-separated names for a local file without header")
    p.add_argument("--encoding-errors", default="strict", help="'replace' for files with invalid UTF-8 bytes")
    p.add_argument("--max-records", type=int, help="stop after N records")
    p.add_argument("--shard-size", type=int, default=100_000, help="records per shard")
    p.add_argument("--format", choices=FORMATS, default="jsonl")


def convert(args: argparse.Namespace) -> int:
    """Run one converter and write shards + manifest; prints what was written and dropped."""
    from tqdm import tqdm

    from gecko_lightning.data.converters import CONVERTERS, ConvertSpec
    from gecko_lightning.data.hf_source import TableOptions

    conv = CONVERTERS[args.converter]
    source = args.source or conv.hub
    if source is None:
        print(f"gecko data convert {args.converter}: pass --source (a local file or folder, or a Hub name)",
              file=sys.stderr)
        return 2
    flags = {c: v for c in ("query", "text", "title", "label", "negative") if (v := getattr(args, f"{c}_column"))}
    names = args.column_names.split(",") if args.column_names else None
    spec = ConvertSpec(
        args.converter, source, args.name, args.split, args.config or conv.config, args.task, args.seed,
        {**conv.columns, **flags}, TableOptions(args.delimiter, names, args.encoding_errors),
    )
    records = tqdm(islice(conv.fn(spec), args.max_records), desc=f"convert {args.converter}", unit=" records")
    out, shards, count, chunk = Path(args.out), 0, 0, []
    for record in records:
        chunk.append(record)
        if len(chunk) == args.shard_size:
            count += write_records(chunk, out / f"shard-{shards:05d}.{args.format}")
            shards, chunk = shards + 1, []
    if chunk or not count:
        count += write_records(chunk, out / f"shard-{shards:05d}.{args.format}")
    config = {k: v for k, v in vars(args).items() if k not in ("command",)}
    write_manifest(out, records=count, converter=args.converter, source=source, split=args.split,
                   dropped=dict(spec.dropped), config=config)
    print(f"wrote {count} records to {out}" + (f"; dropped {dict(spec.dropped)}" if spec.dropped else ""))
    return 0 if count else 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "chunk":  # reads a build config: the builder's command, by module name
        return importlib.import_module("data_builders.chunk").main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="gecko data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check schema datasets without training")
    v.add_argument("paths", nargs="+", help="record files or dataset folders")
    _convert_parser(sub)
    sub.add_parser("chunk", help="cut a folder of .txt, .md, .html and .pdf files into passages (JSONL) as a FRet "
                                 "build reads them (gecko data chunk --help)")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return max(validate(p) for p in args.paths)
    return convert(args)


if __name__ == "__main__":
    sys.exit(main())
