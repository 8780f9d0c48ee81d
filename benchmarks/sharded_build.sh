#!/usr/bin/env bash
# A sharded FRet build measured step by step: the corpus index (M embed slices + index), N shards run
# as N concurrent processes, then the merge. Wall time and peak RSS per process come from
# /usr/bin/time -v; a summary table goes to $OUT/steps.md.
#
#   CORPUS=../shared/data/wikipedia_en_slice_passages/passages.jsonl N=4 M=2 \
#     bash benchmarks/sharded_build.sh [extra build flags, e.g. --corpus.num_seeds=20000]
#
# Defaults: the fake LLM and the tiny random embedder (configs/data/fret_fake.yaml), so the figures
# are the builder's own overhead (reading, truncating, embedding, searching, writing, merging).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${CORPUS:?set CORPUS to a JSONL/Parquet/CSV corpus}
N=${N:-4} M=${M:-2} CONFIG=${CONFIG:-configs/data/fret_fake.yaml} OUT=${OUT:-outputs/sharded_build}
GECKO=${GECKO:-gecko}
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (/usr/bin/time)" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT/logs"
args=(--config "$CONFIG" --output_dir "$OUT" --corpus.path="$CORPUS" --corpus.num_seeds=null "$@")

timed() {  # timed NAME CMD...: run, keep its log, print "NAME wall_s peak_MiB"
  local name=$1; shift
  /usr/bin/time -v "$@" > "$OUT/logs/$name.out" 2> "$OUT/logs/$name.err" || { tail -5 "$OUT/logs/$name.err" >&2; exit 1; }
  awk -v n="$name" '/Elapsed \(wall clock\)/ {split($NF, t, ":"); s = (length(t) == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2]}
       /Maximum resident set size/ {m = $NF / 1024} END {printf "%s %.1f %.0f\n", n, s, m}' "$OUT/logs/$name.err"
}

start=$(date +%s.%N)
{
  for i in $(seq 0 $((M - 1))); do timed "embed-$i-of-$M" $GECKO build fret "${args[@]}" --stage embed --shard.index=$i --shard.count=$M & done
  wait
  timed index $GECKO build fret "${args[@]}" --stage index
  for i in $(seq 0 $((N - 1))); do timed "shard-$i-of-$N" $GECKO build fret "${args[@]}" --shard.index=$i --shard.count=$N & done
  wait
  timed merge $GECKO build fret --merge $(ls -d "$OUT"/shard-*-of-$N) --output_dir "$OUT"
} | tee "$OUT/steps.txt"
total=$(echo "$(date +%s.%N) - $start" | bc)
{
  echo "| step | wall s | peak RSS MiB |"; echo "| --- | --- | --- |"
  awk '{printf "| %s | %s | %s |\n", $1, $2, $3}' "$OUT/steps.txt"
  printf "| all (wall clock) | %.1f | |\n" "$total"
} > "$OUT/steps.md"
cat "$OUT/steps.md"
python3 -c "import json,sys; m=json.load(open('$OUT/manifest.json')); print('records', m['records'], 'llm_calls', m['llm_calls'])"
