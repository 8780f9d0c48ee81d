#!/usr/bin/env bash
# Does the build's LLM-labelled test split rank fits as human labels do? For one domain:
#   1. the user flow's build on the domain's corpus (reused when done), with its held-out test split;
#   2. the base model and several fit variants, each scored without prompts on the domain's human
#      BEIR set and on the build's split;
#   3. scripts/split_agreement.py: each variant's Δ nDCG@10 on both, the sign agreement and Spearman.
#
#   NAME=scifact BEIR=configs/assets/demo/scifact OUT=outputs/demo bash scripts/split_agreement.sh
#   NAME=wikiqa CORPUS=configs/assets/wikiqa/corpus.jsonl BEIR=configs/assets/wikiqa OUT=outputs/agree/wikiqa bash scripts/split_agreement.sh
#   python scripts/make_quora_beir.py && NAME=quora CORPUS=outputs/beir/quora/corpus.jsonl \
#     BEIR=outputs/beir/quora OUT=outputs/agree/quora bash scripts/split_agreement.sh
#   QUERIES=log.txt (with CORPUS) builds from a query log instead of generated queries, as the demo does.
# Variants (VARIANTS, space-separated; each a fit of the demo's recipe with one change):
#   mix-s0 mix-s1 mix-s2  the demo's mixture, seeds 0, 1, 2  fret-only  FRet alone (configs/demo.yaml)
#   pos-seed        the seed passage as positive             neg-random a random candidate as negative
#   lr10x lr100x    learning rate 2e-4 and 2e-3 (too high)
#   raw             trained on raw text (`{query}`, `{title} {text}`), the format the base model knows, not Gecko's
#   kl-s0 kl-s1 kl-s2  the mixture plus the LLM's QL scores distilled over each FRet list (model.distill=kl) at
#                   teacher temperature 1.0 (the default before 0.25), seeds 0-2
#   kl5             kl-s0 over the first 5 candidates of each list (the positive and 4 more)
#   mse             margin_mse in place of kl at teacher temperature 1.0 (seed 0)
#   klt-s0 klt-s1 klt-s2  kl with a sharper teacher: model.teacher_temperature=$KL_T (default 0.25), seeds 0-2
#   mset-s0 mset-s1 mset-s2  margin_mse with the same sharper teacher, seeds 0-2
# KL_ARGS adds flags to the klt fits only (e.g. --model.grad_cache_chunk_size=64 for lists of 10 or more);
# BUILD_ARGS adds flags to the build (e.g. --retrieve.top_n=10).
# Scores go to $OUT/agree/<variant>.json; a variant already scored is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo_env.sh
NAME=${NAME:?set NAME to the human set folder name, e.g. scifact}
VARIANTS=${VARIANTS:-mix-s0 mix-s1 lr100x fret-only raw pos-seed neg-random}
dir="$OUT/agree"
mkdir -p "$dir"
start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start ))s] $*"; }

step "build on ${CORPUS:-the corpus of $BUILD_CONFIG}${QUERIES:+ with the queries of $QUERIES}"
gecko build fret --config "$BUILD_CONFIG" ${CORPUS:+--corpus.path="$CORPUS"} "${query_log[@]}" --output_dir "$OUT/fret" ${BUILD_ARGS:-}
split="$OUT/fret/test"
[ -d "$split" ] || { echo "no test split in $OUT/fret (test_split.fraction is 0)" >&2; exit 2; }

score() {  # MODEL OUTPUT [--sts FILE]: nDCG@10 on the human set and on the split, both without prompts
  gecko eval --model "$1" --beir "$BEIR" --beir "$split" --prompts none --output "$2" "${@:3}"
}
[ -s "$dir/base.json" ] || { step "base"; score "$BASE_MODEL" "$dir/base.json" --sts "$STS"; }

for v in $VARIANTS; do
  [ -s "$dir/$v.json" ] && { echo "reusing $dir/$v.json"; continue; }
  step "variant $v"
  seed=0 positive=ql_top1 negative=lowest config=$FIT_CONFIG extra=() sts=(--sts "$STS")
  case $v in
    mix-s0) ;;
    mix-s1) seed=1 ;;
    mix-s2) seed=2 ;;
    fret-only) config=configs/demo.yaml ;;
    pos-seed) positive=seed sts=() ;;  # STS (the recipe's other bar) only for the recipes, not the probes
    neg-random) negative=random sts=() ;;
    lr10x) extra=(--model.lr=2.0e-4) ;;
    lr100x) extra=(--model.lr=2.0e-3) sts=() ;;
    raw) extra=(--data.init_args.format=plain --data.init_args.query_template="{query}") ;;
    kl-s*) seed=${v#kl-s} extra=(--model.distill=kl --model.teacher_temperature=1.0) ;;
    klt-s*) seed=${v#klt-s} extra=(--model.distill=kl --model.teacher_temperature="${KL_T:-0.25}" ${KL_ARGS:-}) ;;
    mset-s*) seed=${v#mset-s} extra=(--model.distill=margin_mse --model.teacher_temperature="${KL_T:-0.25}") ;;
    kl5) extra=(--model.distill=kl --model.teacher_temperature=1.0 --data.init_args.list_size=5) ;;
    mse) extra=(--model.distill=margin_mse --model.teacher_temperature=1.0) ;;
    *) echo "unknown variant $v (known: mix-s0 mix-s1 mix-s2 fret-only pos-seed neg-random lr10x lr100x raw kl-s0 kl-s1 kl-s2 kl5 mse klt-s0 klt-s1 klt-s2 mset-s0 mset-s1 mset-s2)" >&2; exit 2 ;;
  esac
  data="$OUT/fret"
  if [ "$positive-$negative" != "ql_top1-lowest" ]; then  # re-selected from the build's stage files: no LLM call
    data="$dir/fret-$positive-$negative"
    [ -s "$data/manifest.json" ] || gecko build fret --from "$OUT/fret" --output_dir "$data" \
      --select.positive="$positive" --select.negative="$negative"
  fi
  run="$dir/fit-$v"
  rm -rf "$run"
  gecko fit --config "$config" --model.model_name_or_path="$BASE_MODEL" \
    "$(FIT_CONFIG=$config fret_data_arg "$data")" --data.init_args.seed="$seed" --seed_everything="$seed" \
    --trainer.default_root_dir="$run" "${extra[@]}"
  score "$(find "$run" -name '*.ckpt' | sort | tail -n 1)" "$dir/$v.json" "${sts[@]}"
  rm -rf "$run"  # the scores are what is kept
done
step "summary"
python scripts/split_agreement.py --name "$NAME" "$dir" | tee "$dir/summary.md"
