"""Agreement of the build's LLM-labelled test split with human labels, over fit variants.

`python scripts/split_agreement.py --name scifact outputs/demo/agree [more dirs...]` reads the
`gecko eval` files scripts/split_agreement.sh writes (`base.json` and one file per variant, each
scored on the human set `<name>` and the split `test`) and prints a Markdown table: each variant's
Δ nDCG@10 against the base on both, whether the signs agree, and Spearman's ρ between the two Δ
columns. With several folders (`--name a --name b dirA dirB`, one name per folder, in order) it also pools them.
"""

import argparse
import json
import sys
from pathlib import Path

from scipy.stats import spearmanr

METRIC = "ndcg_at_10"


def load(path: Path, human: str) -> tuple[float, float]:
    scores = json.loads(path.read_text())
    missing = [k for k in (human, "test") if k not in scores]
    if missing:
        raise SystemExit(f"{path}: no scores for {missing} (has {sorted(k for k in scores if k != '_meta')})")
    return scores[human][METRIC], scores["test"][METRIC]


def rows(name: str, folder: Path) -> list[tuple[str, float, float, float, float]]:
    """(variant, human, split, Δ human, Δ split) per variant file, in file-name order."""
    base_h, base_s = load(folder / "base.json", name)
    out = [("base", base_h, base_s, 0.0, 0.0)]
    for f in sorted(folder.glob("*.json")):
        if f.stem == "base":
            continue
        h, s = load(f, name)
        out.append((f.stem, h, s, h - base_h, s - base_s))
    return out


def sign(x: float) -> int:
    """-1, 0 or +1: a Δ of exactly 0 (no query moved) agrees with neither a gain nor a loss."""
    return (x > 0) - (x < 0)


def agreement(deltas: list[tuple[float, float]]) -> str:
    if len(deltas) < 3:
        return f"{len(deltas)} variants: too few for a correlation"
    same = sum(sign(h) == sign(s) for h, s in deltas)
    human, split = [h for h, _ in deltas], [s for _, s in deltas]
    if len(set(human)) == 1 or len(set(split)) == 1:  # a rank correlation with a constant is undefined
        side = "split" if len(set(split)) == 1 else "human set"
        return f"sign agreement {same}/{len(deltas)}, Spearman ρ undefined: the {side} gives every variant the same Δ"
    rho = spearmanr(human, split).statistic
    return f"sign agreement {same}/{len(deltas)}, Spearman ρ {rho:+.2f} over {len(deltas)} variants"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", action="append", required=True, help="the human set's folder name, once per dir")
    p.add_argument("dirs", nargs="+", type=Path, help="folders of gecko eval files (base.json + variants)")
    p.add_argument("--also-without", action="append", default=[], metavar="VARIANT",
                   help="also report the agreement without these variants (e.g. the deliberately bad run)")
    args = p.parse_args()
    if len(args.name) != len(args.dirs):
        sys.exit(f"{len(args.name)} --name for {len(args.dirs)} folders: give one --name per folder")
    pooled, pooled_without = [], []
    for name, folder in zip(args.name, args.dirs):
        table = rows(name, folder)
        print(f"\n### {name} ({folder})\n")
        print(f"| variant | {name} nDCG@10 | Δ | split nDCG@10 | Δ | signs agree |")
        print("| --- | ---: | ---: | ---: | ---: | :---: |")
        for v, h, s, dh, ds in table:
            agree = "" if v == "base" else ("yes" if sign(dh) == sign(ds) else "**no**")
            print(f"| {v} | {h:.2f} | {dh:+.2f} | {s:.2f} | {ds:+.2f} | {agree} |")
        deltas = [(dh, ds) for v, _, _, dh, ds in table if v != "base"]
        pooled += deltas
        print(f"\n{name}: {agreement(deltas)}")
        if args.also_without:
            kept = [(dh, ds) for v, _, _, dh, ds in table if v != "base" and v not in args.also_without]
            pooled_without.extend(kept)
            print(f"{name} without {', '.join(args.also_without)}: {agreement(kept)}")
    if len(args.dirs) > 1:
        print(f"\npooled: {agreement(pooled)}")
        if args.also_without:
            print(f"pooled without {', '.join(args.also_without)}: {agreement(pooled_without)}")


if __name__ == "__main__":
    main()
