"""How much a build's generated queries copy their seed passage, and how often re-ranking moves the positive.

`python scripts/query_stats.py outputs/demo/fret [more build dirs...]` reads each finished build's
stage files (`stages/corpus.jsonl`, `generate.jsonl`, `rerank.jsonl`) and prints one Markdown row per
build:
- parsed: queries that parsed, of the seeds;
- re-ranked: queries kept by the round-trip filter (training and held-out test queries together);
- overlap: the mean share of a query's distinct words (lower-cased letters and digits) that occur in its
  seed passage (title and text). 1.0 is a query made only of the passage's words;
- words: the mean query length in words;
- seed at 1: the share of re-ranked queries whose seed the embedder retrieved at rank 1;
- QL top 1 ≠ seed: the share whose query-likelihood top candidate is not the seed, i.e. where `select.positive:
  ql_top1` relabels the positive. The paper saw about 15 % for its LLM top 1.
"""

import argparse
import re
import sys
from pathlib import Path

from data_builders.corpus import read_jsonl
from data_builders.fret.stages import choose

WORD = re.compile(r"[a-z0-9]+")


def words(text: str | None) -> set[str]:
    return set(WORD.findall((text or "").lower()))


def stats(build: Path) -> dict[str, float]:
    stages = build / "stages"
    try:
        corpus = {str(r.get("_id", r.get("id"))): r for r in read_jsonl(stages / "corpus.jsonl")}
        generated = read_jsonl(stages / "generate.jsonl")
        reranked = read_jsonl(stages / "rerank.jsonl")
    except FileNotFoundError as e:
        raise SystemExit(f"{e}; name the output_dir of a finished `gecko build fret`") from None
    overlaps, lengths = [], []
    for row in generated:
        query = words(row.get("query"))
        if not query:
            continue
        seed = corpus[str(row["seed_id"])]
        overlaps.append(len(query & (words(seed.get("text")) | words(seed.get("title")))) / len(query))
        lengths.append(len(row["query"].split()))
    n = max(1, len(reranked))
    return {
        "seeds": len(generated),
        "parsed": len(overlaps),
        "reranked": len(reranked),
        "overlap": sum(overlaps) / max(1, len(overlaps)),
        "words": sum(lengths) / max(1, len(lengths)),
        "seed_at_1": sum(r.get("seed_retrieval_rank") == 1 for r in reranked) / n,
        # the positive `select.positive: ql_top1` would choose, by the build's own rule
        "ql_moves": sum(choose(r, "ql_top1", "none", 0)[0] != r["seed_id"] for r in reranked) / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=Path, help="output_dir of finished FRet builds")
    args = parser.parse_args(argv)
    print("| build | parsed / seeds | re-ranked | overlap | words | seed at 1 | QL top 1 ≠ seed |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for build in args.builds:
        s = stats(build)
        print(f"| {build} | {s['parsed']} / {s['seeds']} | {s['reranked']} | {s['overlap']:.2f} | {s['words']:.1f} "
              f"| {100 * s['seed_at_1']:.1f} % | {100 * s['ql_moves']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
