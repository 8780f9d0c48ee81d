#!/usr/bin/env bash
# Rebuild the demo's academic and classification sources (configs/assets/demo_nli, demo_banking77)
# from the raw public files, with `gecko data convert`:
#   DATA=../shared/data bash scripts/make_demo_mixture.sh
# NLI: the first NLI_RECORDS records of SNLI's test split (SentEval layout): premise -> entailment (+),
#      contradiction (-). Classification: PER_CLASS texts of each of Banking77's 77 intents (train.csv),
#      drawn with seed 0 -> another text of the same intent (+), a text of another intent (-).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
NLI_RECORDS=${NLI_RECORDS:-640}
PER_CLASS=${PER_CLASS:-8}
OUT_NLI=${OUT_NLI:-configs/assets/demo_nli}
OUT_CLS=${OUT_CLS:-configs/assets/demo_banking77}
for f in "$DATA/snli_senteval/s1.test" "$DATA/banking77/train.csv"; do
  [ -f "$f" ] || { echo "missing $f: point DATA at the folder holding snli_senteval/ and banking77/" >&2; exit 2; }
done

rm -rf "$OUT_NLI" "$OUT_CLS"
gecko data convert snli --source "$DATA/snli_senteval" --split test --max-records "$NLI_RECORDS" --out "$OUT_NLI"

sample=$(mktemp -d)
trap 'rm -rf "$sample"' EXIT
python - "$DATA/banking77/train.csv" "$sample/train.csv" "$PER_CLASS" <<'PY'
import csv, random, sys
from collections import defaultdict
src, dst, per_class = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(src, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
by_label = defaultdict(list)
for row in rows:
    by_label[row["category"]].append(row)
rng = random.Random(0)
picked = [row for label in sorted(by_label) for row in rng.sample(by_label[label], min(per_class, len(by_label[label])))]
rng.shuffle(picked)  # classes interleaved, so a prefix (max_records) still spans them
with open(dst, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["text", "category"])
    writer.writeheader()
    writer.writerows(picked)
print(f"{len(picked)} texts, {len(by_label)} intents -> {dst}")
PY
gecko data convert classification --source "$sample/train.csv" --split train --name banking77 --out "$OUT_CLS"
# the manifests name the temporary sample; record where it came from instead
python - "$OUT_CLS/manifest.json" "$DATA/banking77/train.csv" "$PER_CLASS" <<'PY'
import json, sys
path, src, per_class = sys.argv[1], sys.argv[2], sys.argv[3]
manifest = json.load(open(path, encoding="utf-8"))
manifest["source"] = manifest["config"]["source"] = f"{src}, {per_class} texts per intent drawn with seed 0"
open(path, "w", encoding="utf-8").write(json.dumps(manifest, indent=2) + "\n")
PY
