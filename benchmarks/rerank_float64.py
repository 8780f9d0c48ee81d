"""How far is each float32 re-rank run from the exact scores? The pairs of a `rerank_grouping.py` run
scored again in float64 (the transformers backend, per query, full prompts), and each run's largest
|QL| and |RC| difference from them. Printed per run folder.

    .venv/bin/python benchmarks/rerank_grouping.py --engines transformers --limit 20 --seeds 6 --submit-size 40 --out /tmp/bench_tf
    .venv/bin/python benchmarks/rerank_float64.py /tmp/bench_tf transformers-0 transformers-1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from data_builders.config import load_config
    from data_builders.corpus import read_jsonl
    from data_builders.fret.rerank import _logsumexp
    from data_builders.llm.hf import TransformersLLM
    from data_builders.prompts import load_prompt, passage_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the --out folder of benchmarks/rerank_grouping.py")
    ap.add_argument("runs", nargs="+", help="run folders under it, e.g. transformers-0 transformers-1")
    ap.add_argument("--config", default=str(REPO / "configs" / "data" / "fret_wiki.yaml"))
    args = ap.parse_args()
    out = Path(args.out)
    llm = TransformersLLM(load_config(args.config, {"llm.dtype": "float64"}).llm, seed=0)
    spec = load_prompt("qlrc-v1", ("context", "continuation", "suffix", "labels")).spec
    by_id = {r["id"]: r for r in read_jsonl(out / "prep" / "stages" / "corpus.jsonl")}
    exact = {}
    for row in read_jsonl(out / "prep" / "stages" / "retrieve.jsonl"):
        contexts = [spec["context"].format(passage=passage_text(by_id[c]["title"], by_id[c]["text"]), task=row["task"])
                    for c in row["candidates"]]
        conts = [spec["continuation"].format(query=row["query"], task=row["task"])] * len(contexts)
        for c, (ql, rc) in zip(row["candidates"], llm.ql_rc(contexts, conts, spec["suffix"], list(spec["labels"]))):
            exact[(row["seed_id"], c)] = (ql, _logsumexp(rc))
    for run in args.runs:
        got = {(r["seed_id"], c["id"]): (c["ql"], c["rc"]) for r in read_jsonl(out / run / "stages" / "rerank.jsonl")
               for c in r["candidates"]}
        print(json.dumps({"run": run, "pairs": len(exact),
                          "max_abs_ql_vs_float64": max(abs(got[k][0] - exact[k][0]) for k in exact),
                          "max_abs_rc_vs_float64": max(abs(got[k][1] - exact[k][1]) for k in exact)}))


if __name__ == "__main__":
    main()
