"""The label-free test split: which seeds are held out, what is relevant to their queries, what training drops.

A seed is held out when a hash of its id falls below `test_split.fraction`. The id alone decides, so
a shard, the merge of all shards and a `--from` re-selection hold out exactly the seeds an unsharded
build holds out, and growing `corpus.num_seeds` keeps every earlier test seed in the test set.

Held-out queries are scored by the LLM like any other (the rerank stage), so their relevance labels
come from the same judge that labels training; `relevance` turns one re-ranked row into qrels.
Training then loses every record that would leak the test set (`leaks`): a query equal to a test
query, or a positive that is relevant to a test query. `select` calls `split`; `export` writes the
BEIR folder with `write_beir` (the format `gecko eval --beir` and evaluation/loaders.py read).
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from gecko_lightning.errors import UserError

from ..config import SplitConfig
from ..corpus import write_jsonl

FOLDER = "test"  # <output_dir>/test/: corpus.jsonl, queries.jsonl, qrels/test.tsv
RULES = {
    "graded": "2: the seed passage the query was written from; 1: a candidate ranked above the seed by both "
              "QL and RC (the LLM's re-ranking of the query's top-N retrieved passages); a given query "
              "(corpus.queries), which has no seed: 2 for the positive `select.positive` chose",
    "seed": "1: the seed passage the query was written from; a given query: 1 for its chosen positive",
}


def row_key(row: dict[str, Any]) -> str:
    """What a query row is known by in every stage file: its seed passage's id, or `query:<id>` for a
    given query (corpus.queries), which has no seed; the prefix keeps a query id from meeting a passage id."""
    return f"query:{row['query_id']}" if row.get("query_id") is not None else row["seed_id"]


def record_id(row: dict[str, Any]) -> str:
    """The id of the row's training record, and of its query in the test split."""
    return f"fret-{row_key(row)}"


def check(cfg: SplitConfig) -> None:
    if isinstance(cfg.fraction, bool) or not 0 <= cfg.fraction < 1:
        raise UserError(f"test_split.fraction={cfg.fraction!r} must be in [0, 1): the share of seeds held out "
                        f"for the test set (0 turns it off)")


def is_test_seed(seed_id: str, fraction: float) -> bool:
    """Whether `seed_id` is held out: the first 8 bytes of sha256("test_split:" + id) as a number in [0, 1)."""
    digest = hashlib.sha256(f"test_split:{seed_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def relevance(row: dict[str, Any], rule: str, positive: str | None = None) -> dict[str, int]:
    """{passage id: grade} of one re-ranked row (its `candidates` carry r_ql and r_rc, 1 = best).
    A given query has no seed: its `positive` (the selection's) is what the LLM judged relevant."""
    if row["seed_id"] is None:
        return {positive: 2 if rule == "graded" else 1}
    if rule == "seed":
        return {row["seed_id"]: 1}
    seed = next((c for c in row["candidates"] if c["id"] == row["seed_id"]), None)
    grades = {row["seed_id"]: 2}
    if seed is not None:  # the seed is always a candidate (retrieve adds it), but a hand-made row may lack it
        for c in row["candidates"]:
            if c["id"] != row["seed_id"] and c["r_ql"] < seed["r_ql"] and c["r_rc"] < seed["r_rc"]:
                grades[c["id"]] = 1
    return grades


def _norm(query: str) -> str:
    return " ".join(query.casefold().split())


def split(rows: list[dict[str, Any]], chosen: list[dict[str, Any]], cfg: SplitConfig
          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(training selections, test rows with `qrels`, stats) from re-ranked rows and their selections.

    `chosen[i]` is the selection of `rows[i]`. With `fraction` 0 the selections come back unchanged.
    """
    check(cfg)
    test = [{**r, "qrels": relevance(r, cfg.relevance, sel["positive_id"])}
            for r, sel in zip(rows, chosen) if is_test_seed(row_key(r), cfg.fraction)]
    test_queries = {_norm(r["query"]) for r in test}
    relevant = {pid for r in test for pid in r["qrels"]}
    train, dropped = [], Counter()
    for row, sel in zip(rows, chosen):
        if is_test_seed(row_key(row), cfg.fraction):
            continue
        reason = leaks(row, sel, test_queries, relevant)
        if reason:
            dropped[reason] += 1
        else:
            train.append(sel)
    grades = Counter(g for r in test for g in r["qrels"].values())
    stats = {"fraction": cfg.fraction, "relevance": cfg.relevance, "rule": RULES[cfg.relevance],
             "folder": FOLDER if test else None, "queries": len(test), "qrels": sum(grades.values()),
             "grades": {str(g): n for g, n in sorted(grades.items())},
             "training_records_dropped": {"query_in_test": dropped["query_in_test"],
                                          "positive_relevant_to_test": dropped["positive_relevant_to_test"]}}
    return train, test, stats


def leaks(row: dict[str, Any], sel: dict[str, Any], test_queries: set[str], relevant: set[str]) -> str | None:
    """Why a training record would leak the test set, or None: its query is a test query, or its positive
    is relevant to one (a test seed's passage included)."""
    if _norm(row["query"]) in test_queries:
        return "query_in_test"
    if sel["positive_id"] in relevant:
        return "positive_relevant_to_test"
    return None


def write_beir(out: Path, test: list[dict[str, Any]], corpus: list[dict[str, Any]]) -> Path | None:
    """`out/test/` as a BEIR folder over the whole (truncated) corpus the build searched; removed when empty."""
    folder = out / FOLDER
    if (folder / "qrels" / "test.tsv").is_file():
        shutil.rmtree(folder)  # a re-export must not keep the queries of another split
    if not test:
        return None
    (folder / "qrels").mkdir(parents=True)
    write_jsonl(folder / "corpus.jsonl", [{"_id": p["id"], "title": p["title"], "text": p["text"]} for p in corpus])
    write_jsonl(folder / "queries.jsonl", [{"_id": record_id(r), "text": r["query"], "metadata": {
        "seed_id": r["seed_id"], **({"query_id": r["query_id"]} if r.get("query_id") is not None else {}),
        "task": r["task"], "task_type": r["task_type"]}} for r in test])
    lines = ["query-id\tcorpus-id\tscore"] + [f"{record_id(r)}\t{pid}\t{g}" for r in test for pid, g in r["qrels"].items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder

