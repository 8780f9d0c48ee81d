"""`gecko data chunk`: a folder (or glob) of documents -> the passages a FRet build would read, as JSONL.

    gecko data chunk FOLDER --out passages.jsonl [--config build.yaml] [--corpus.chunk_tokens=200 ...]

The passages are exactly the build's: the same reader and chunker (corpus/chunking.py), the same
`corpus.*` keys, and `retrieve.embedder`'s tokenizer counting the tokens. Each line is a BEIR-style
`{"_id", "title", "text"}` row, so the file is a corpus of its own (`--corpus.path=passages.jsonl`
reads back the same ids and texts) and any other tool can read it. The counts go to stdout as JSON.
`gecko data` dispatches here by module name: gecko_lightning never imports data_builders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from gecko_lightning.errors import UserError, exit_on_user_error

from .config import build_parser, config_from
from .corpus import load_corpus, write_jsonl
from .corpus.documents import reads_documents


def parse(argv: list[str]):
    """(build config with `corpus.path` = FOLDER, output path); every `BuildConfig` key is a flag."""
    parser = build_parser("gecko data chunk", "Cut a folder of .txt, .md, .html and .pdf files into passages.")
    parser.add_argument("folder", type=str, help="A folder (read recursively) or a glob such as 'docs/**/*.md'.")
    parser.add_argument("--out", type=str, required=True, help="The JSONL file to write ({_id, title, text} per line).")
    args = parser.parse_args(argv)
    cfg = config_from(args)
    cfg.corpus.path = args.folder
    if not reads_documents(cfg.corpus):
        raise UserError(f"{args.folder!r} is not a folder or glob of documents (a file, a Hub name, or a folder of "
                        f"data files); gecko data chunk cuts .txt, .md, .html and .pdf files into passages")
    return cfg, args.out


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("gecko data chunk"):
        cfg, out = parse(list(sys.argv[1:] if argv is None else argv))
        report: dict = {}
        rows = load_corpus(cfg.corpus, tokenizer=cfg.retrieve.embedder, report=report)
        write_jsonl(Path(out), ({"_id": r["id"], "title": r["title"], "text": r["text"]} for r in rows))
        print(json.dumps({"out": out, **report}, indent=2))
    return 0
