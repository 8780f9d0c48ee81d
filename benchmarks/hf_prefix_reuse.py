"""Does sharing a passage's KV cache pay for the transformers backend on this CPU?

Today's path scores QL with one left-padded forward over every full prompt (`TransformersLLM.ql_rc`,
`llm.score_batch_size` rows at a time). The alternative measured here runs each passage's shared
prefix once, then the rows' remaining tokens (task, query) as one right-padded batch on a copy of
that prefix's `past_key_values`. Both score the same (query, passage) pairs, from a build prepared by
`benchmarks/rerank_grouping.py` (its `prep/stages`), side by side in one process; printed: pairs/s
of each and the largest |QL difference|.

    PYTHONPATH=. .venv/bin/python benchmarks/hf_prefix_reuse.py --prep outputs/bench_rerank_grouping/prep/stages
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def pairs_from(prep: Path, limit: int, prompt) -> list[tuple[str, str]]:
    """(context, continuation) of the first `limit` pairs of `retrieve.jsonl`, in passage order."""
    from data_builders.corpus import read_jsonl
    from data_builders.fret.stages import _passage, prefix_order
    from data_builders.prompts import passage_text

    by_id = {r["id"]: r for r in read_jsonl(prep / "corpus.jsonl")}
    pairs = [(row, passage_text(by_id[c]["title"], by_id[c]["text"])) for row in read_jsonl(prep / "retrieve.jsonl")
             for c in row["candidates"]][:limit]
    pairs = [pairs[i] for i in prefix_order(pairs, _passage)]
    return [(prompt.spec["context"].format(passage=p, task=r["task"]), prompt.spec["continuation"].format(query=r["query"]))
            for r, p in pairs]


@torch.inference_mode()
def shared_prefix_ql(llm, rows) -> list[float]:
    """QL of `rows` (ScoringRows of one passage): the common prefix once, the rest batched on its cache."""
    ids = [r.ids for r in rows]
    common = 0
    while all(len(i) > common for i in ids) and len({i[common] for i in ids}) == 1:
        common += 1
    p = max(1, min(common, min(r.start for r in rows) - 1))  # the position predicting the 1st query token stays in the batch
    cache = llm.model(input_ids=torch.tensor([ids[0][:p]]), use_cache=True).past_key_values
    out = []
    for start in range(0, len(rows), llm.cfg.score_batch_size):
        chunk = rows[start : start + llm.cfg.score_batch_size]
        width = max(len(r.ids) - p for r in chunk)
        tail = torch.full((len(chunk), width), llm.tokenizer.pad_token_id)
        mask = torch.zeros((len(chunk), p + width), dtype=torch.long)
        mask[:, :p] = 1
        for i, r in enumerate(chunk):
            tail[i, : len(r.ids) - p] = torch.tensor(r.ids[p:])
            mask[i, p : len(r.ids)] = 1
        kv = copy.deepcopy(cache)
        kv.batch_repeat_interleave(len(chunk))
        positions = torch.arange(p, p + width).expand(len(chunk), -1)
        logp = F.log_softmax(llm.model(input_ids=tail, attention_mask=mask, position_ids=positions,
                                       past_key_values=kv).logits.float(), dim=-1)
        for i, r in enumerate(chunk):
            at = torch.arange(r.start, r.start + r.length)
            out.append(logp[i, at - p - 1].gather(-1, torch.tensor(r.ids[r.start : r.start + r.length])[:, None]).mean().item())
    return out


def main() -> None:
    from data_builders.config import load_config
    from data_builders.llm.hf import TransformersLLM
    from data_builders.prompts import load_prompt

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prep", required=True)
    ap.add_argument("--config", default=str(REPO / "configs" / "data" / "fret_wiki.yaml"))
    ap.add_argument("--pairs", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as vLLM's CPU engine runs here (one OpenMP thread)
    cfg = load_config(args.config)
    llm = TransformersLLM(cfg.llm, seed=cfg.corpus.seed)
    texts = pairs_from(Path(args.prep), args.pairs, load_prompt("ql-v1", ("context", "continuation")))
    start = time.perf_counter()
    today = llm.loglik([c for c, _ in texts], [q for _, q in texts])
    today_s = time.perf_counter() - start
    rows = [llm.prompts.scoring_row(c, q) for c, q in texts]
    start, shared, group = time.perf_counter(), [], []
    for i, (ctx, _) in enumerate(texts):  # consecutive pairs of one passage share its prefix
        group.append(rows[i])
        if i + 1 == len(texts) or not texts[i + 1][0].startswith(ctx.split("\nTask:")[0] + "\nTask:"):
            shared += shared_prefix_ql(llm, group)
            group = []
    shared_s = time.perf_counter() - start
    print(json.dumps({"pairs": len(texts), "today_pairs_per_s": round(len(texts) / today_s, 3),
                      "shared_prefix_pairs_per_s": round(len(texts) / shared_s, 3),
                      "speedup": round(today_s / shared_s, 2),
                      "max_abs_delta": max(abs(a - b) for a, b in zip(today, shared))}, indent=1))


if __name__ == "__main__":
    main()
