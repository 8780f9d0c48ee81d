"""The Python side of benchmarks/gpu_suite.sh; each subcommand runs in a fresh process.

    python benchmarks/gpu_suite.py prepare OUT [--tiny]                 # random-init backbone + anchor records
    python benchmarks/gpu_suite.py grouped OUT [throughput.py flags]     # ours, ours + length grouping, peer (A/B/A/B)
    python benchmarks/gpu_suite.py fit OUT plain|zero2|zero3 [--tiny]   # `gecko fit` for --steps steps, its losses
    python benchmarks/gpu_suite.py table OUT                            # OUT/gpu_suite.md from the figures

The throughput rows come from benchmarks/throughput.py (the suite calls it for the eager, compile
and GradCache comparisons); this file adds what it lacks: the DataModule's length grouping, whole
`gecko fit` runs under DeepSpeed against plain training, and the table.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402  (benchmarks/throughput.py: one home for the workload and the steps)

from gecko_lightning.data import FRetDataModule  # noqa: E402
from gecko_lightning.data.schema import write_records  # noqa: E402

REPO = throughput.REPO
GROUP_WINDOW = 8  # batches whose rows are sorted by length together
N_RECORDS = {True: 256, False: 4096}  # tiny / BERT-base: whole batches, several grouping windows
QUERY_PREFIX, DOC_PREFIX = throughput.GECKO.query_prefix(throughput.RETRIEVAL_TASK), throughput.GECKO.document_prefix()


# ---- prepare: the weights and the records every row reads ---------------------------------------


def prepare(out: Path, tiny: bool, seed: int) -> None:
    """One backbone folder (both sides load it) and the anchor workload as schema records."""
    throughput.backbone_folder(tiny, out / "model", seed)
    # throughput.make_triples defines the workload; the records hold its texts without the Gecko
    # prefixes, which the DataModule's `gecko` template puts back, so both paths train on the same strings.
    records = [
        {"id": e.id, "source": "anchor", "task": throughput.RETRIEVAL_TASK, "query": e.query.removeprefix(QUERY_PREFIX),
         "positive": {"text": e.positive.removeprefix(DOC_PREFIX)}, "negative": {"text": e.negative.removeprefix(DOC_PREFIX)}}
        for e in throughput.make_triples(N_RECORDS[tiny], seed)
    ]
    write_records(records, out / "data" / "anchor.jsonl")


# ---- grouped: the DataModule's length grouping against the same rows in plain order ------------


def grouping_option() -> tuple[str, object] | None:
    """(name, value) of the DataModule's length-grouping argument, or None when it has none."""
    params = inspect.signature(FRetDataModule).parameters
    for name in ("length_grouping", "group_by_length"):
        if name in params:
            is_flag = params[name].annotation in (bool, "bool")
            return name, True if is_flag else GROUP_WINDOW
    return None


class PlanSource:
    """Endless batches in the DataModule's order: collated by its loader (ours) or as Example rows (peer)."""

    def __init__(self, loader, tokens: list[int], rows: bool = False) -> None:
        self.loader, self.tokens, self.rows = loader, tokens, rows
        self.plan = [list(b) for b in loader.sampler]  # (steps, B) indices; the same each pass
        self.k, self.it, self.consumed = 0, None, 0

    def __next__(self):
        idx = self.plan[self.k % len(self.plan)]
        self.k += 1
        self.consumed += sum(self.tokens[i] for i in idx)
        if self.rows:
            return self.loader.dataset[idx]
        if self.it is None or (self.k - 1) % len(self.plan) == 0:
            self.it = iter(self.loader)
        return next(self.it)


def datamodule(out: Path, args, grouping: dict) -> FRetDataModule:
    dm = FRetDataModule(str(out / "data" / "anchor.jsonl"), tokenizer=str(out / "model"), batch_size=args.batch_size,
                        query_max_length=args.max_length, doc_max_length=args.max_length, num_workers=args.workers,
                        seed=args.seed, **grouping)
    dm.setup("fit")
    return dm


def grouped(out: Path, argv: list[str]) -> int:
    option = grouping_option()
    if option is None:
        sys.exit("the DataModule has no length-grouping option (length_grouping / group_by_length): row skipped")
    args = throughput.parse_args(argv)
    device = torch.device(args.device)
    print(throughput.versions(device))
    plain_dm, grouped_dm = datamodule(out, args, {}), datamodule(out, args, dict([option]))
    o_step, module = throughput.ours(out / "model", args, device, None)
    p_step, _, n_peer = throughput.peer(out / "model", args, device, None)
    n_params, tok = throughput.non_embedding_params(module.encoder.backbone), module.encoder.tokenizer
    rows = plain_dm.train_dataset[list(range(len(plain_dm.train_dataset)))]
    count = lambda texts: [len(t) for t in tok(list(texts), truncation=True, max_length=args.max_length)["input_ids"]]  # noqa: E731
    tokens = [sum(t) for t in zip(*(count([getattr(e, s) for e in rows]) for s in ("query", "positive", "negative")))]
    modes = {
        "ours": (o_step, PlanSource(plain_dm.train_dataloader(), tokens), n_params),
        f"ours+{option[0]}": (o_step, PlanSource(grouped_dm.train_dataloader(), tokens), n_params),
        "peer": (p_step, PlanSource(plain_dm.train_dataloader(), tokens, rows=True), n_peer),
    }
    results = {}
    for rnd in range(1, args.rounds + 1):
        for mode, (step, source, n) in modes.items():
            results[mode] = throughput.measure(step, source, args, device, args.batch_size, n)
            print(f"round {rnd}  {throughput.describe(mode, results[mode], device)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "option": list(option), "last_round": results}, indent=2))
    return 0


# ---- fit: the real `gecko fit`, plain or under DeepSpeed, and its per-step losses --------------


def fit_command(out: Path, name: str, tiny: bool, steps: int, batch: int) -> list[str]:
    gpu = torch.cuda.is_available()
    cmd = [sys.executable, "-m", "gecko_lightning", "fit"]
    if name != "plain":
        cmd += ["--config", str(REPO / "configs" / "strategy" / f"deepspeed_{name}.yaml")]
    root, length = out / "fit" / name, 128 if tiny else 256
    return cmd + [
        "--seed_everything=0", f"--model.model_name_or_path={out / 'model'}", "--model.lr=1e-4",
        "--data=gecko_lightning.data.FRetDataModule", f"--data.init_args.path={out / 'data' / 'anchor.jsonl'}",
        f"--data.init_args.batch_size={batch}", f"--data.init_args.query_max_length={length}",
        f"--data.init_args.doc_max_length={length}", f"--data.init_args.num_workers={2 if gpu else 0}",
        f"--trainer.accelerator={'gpu' if gpu else 'cpu'}", "--trainer.devices=1",
        f"--trainer.precision={'bf16-mixed' if gpu else '32-true'}", f"--trainer.max_steps={steps}",
        "--trainer.log_every_n_steps=1", "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={root}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger", f"--trainer.logger.init_args.save_dir={root}",
    ]


def fit(out: Path, name: str, tiny: bool, steps: int, batch: int) -> int:
    """Run one `gecko fit`; write OUT/fit_NAME.json with its train/loss per step and its speed."""
    if name != "plain" and not torch.cuda.is_available():
        sys.exit(f"{name}: DeepSpeed needs a CUDA GPU; row skipped")
    t0 = time.perf_counter()
    res = subprocess.run(fit_command(out, name, tiny, steps, batch), cwd=REPO)
    if res.returncode != 0:
        sys.exit(f"{name}: gecko fit exited with {res.returncode}")
    (metrics,) = (out / "fit" / name).rglob("metrics.csv")
    logged = list(csv.DictReader(metrics.open()))
    losses = [float(r["train/loss"]) for r in logged if r.get("train/loss")]
    speed = [(float(r["throughput/triples_per_s"]), float(r.get("throughput/tokens_per_s") or "nan"))
             for r in logged if r.get("throughput/triples_per_s")]
    triples_s, tokens_s = speed[-1] if speed else (None, None)
    summary = {"losses": losses, "triples_s": triples_s, "tokens_s": tokens_s, "wall_s": time.perf_counter() - t0, "batch": batch}
    (out / f"fit_{name}.json").write_text(json.dumps(summary, indent=2))
    return 0


# ---- table -------------------------------------------------------------------------------------


def _figures(r: dict) -> list[str]:
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
    return [f"{r['triples_s']:,.1f}", f"{r['tokens_s']:,.0f}", mfu, f"{r['peak_gib']:.2f}"]


def _skipped(out: Path, name: str) -> str:
    note = out / f"{name}.skip"
    return note.read_text().strip().replace("|", "/") if note.is_file() else "not run"


def throughput_rows(out: Path, name: str, label: str, base: str, modes: list[tuple[str, str]]) -> list[list[str]]:
    """One row per mode of OUT/NAME.json; `ratio` is each mode's triples/s over mode `base`'s."""
    path = out / f"{name}.json"
    if not path.is_file():
        return [[f"{label}: {text}", "-", "-", "-", "-", "-", f"skipped: {_skipped(out, name)}"] for _, text in modes]
    figures = json.loads(path.read_text())
    last, a = figures["last_round"], figures["args"]
    rows = []
    for mode, text in modes:
        key = next((k for k in last if k.startswith(mode)), None) if mode.endswith("+") else mode
        r = last.get(key) if key else None
        if r is None:
            rows.append([f"{label}: {text}", "-", "-", "-", "-", "-", "mode not in the run"])
            continue
        ratio = f"{r['triples_s'] / last[base]['triples_s']:.2f}" if key != base and base in last else ""
        note = f"B={a['cache_batch']}, chunks of {a['cache_chunk']}" if "cached" in key else f"B={a['batch_size']}"
        rows.append([f"{label}: {text}", *_figures(r), ratio, note + (f"; ratio: triples/s over the {base} row" if ratio else "")])
    return rows


def fit_rows(out: Path, steps: int) -> list[list[str]]:
    plain = out / "fit_plain.json"
    base = json.loads(plain.read_text()) if plain.is_file() else None
    rows = []
    for name, label in (("plain", "plain, one device"), ("zero2", "DeepSpeed ZeRO-2"), ("zero3", "DeepSpeed ZeRO-3")):
        path = out / f"fit_{name}.json"
        if not path.is_file():
            rows.append([f"{label}: {steps} steps", "-", "-", "-", "-", "-", f"skipped: {_skipped(out, f'fit_{name}')}"])
            continue
        r = json.loads(path.read_text())
        speed = f"{r['triples_s']:,.1f}" if r["triples_s"] else "-"
        tokens = f"{r['tokens_s']:,.0f}" if r.get("tokens_s") else "-"
        note = f"B={r['batch']}; loss step 1 {r['losses'][0]:.4f}, step {len(r['losses'])} {r['losses'][-1]:.4f}"
        ratio = ""
        if base is not None and name != "plain":
            diffs = [abs(a - b) for a, b in zip(r["losses"], base["losses"])]
            note += f"; max abs loss diff vs plain over {len(diffs)} steps {max(diffs):.4f}"
            ratio = f"{r['triples_s'] / base['triples_s']:.2f}" if r["triples_s"] and base["triples_s"] else ""
        rows.append([f"{label}: {len(r['losses'])} steps", speed, tokens, "-", "-", ratio, note])
    return rows


def table(out: Path, steps: int) -> Path:
    rows = (
        throughput_rows(out, "eager", "eager", "peer", [("ours", "ours"), ("peer", "sentence-transformers MNRL")])
        + throughput_rows(out, "compile", "compile", "peer", [("ours", "ours, torch.compile"), ("peer", "sentence-transformers MNRL")])
        + throughput_rows(out, "grouped", "length grouping", "peer",
                          [("ours", "ours"), ("ours+", "ours, length grouping"), ("peer", "sentence-transformers MNRL")])
        + throughput_rows(out, "gradcache", "GradCache", "ours", [("ours", "ours, uncached"), ("ours-cached", "ours, GradCache")])
        + fit_rows(out, steps)
    )
    head = ["row", "triples/s", "real tokens/s", "MFU", "peak GiB", "ratio", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    setup = out / "setup.txt"
    text = (setup.read_text().strip() + "\n\n" if setup.is_file() else "") + "\n".join(lines) + "\n"
    path = out / "gpu_suite.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["prepare", "grouped", "fit", "table"])
    p.add_argument("out", type=Path)
    p.add_argument("name", nargs="?", choices=["plain", "zero2", "zero3"], help="fit: which run")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--steps", type=int, default=100, help="fit: optimiser steps per run")
    p.add_argument("--batch-size", type=int, help="fit: triples per step (default 128; 8 with --tiny)")
    p.add_argument("--seed", type=int, default=0)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["grouped"] and len(argv) > 1:  # the rest are throughput.py's flags
        return grouped(Path(argv[1]), argv[2:])
    args = p.parse_args(argv)
    if args.command == "prepare":
        prepare(args.out, args.tiny, args.seed)
    elif args.command == "fit":
        return fit(args.out, args.name or "plain", args.tiny, args.steps, args.batch_size or (8 if args.tiny else 128))
    else:
        print(table(args.out, args.steps).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
