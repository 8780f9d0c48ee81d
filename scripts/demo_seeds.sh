#!/usr/bin/env bash
# The demo's evidence: fine-tune 3 seeds on each positive choice of one FRet build and score each.
#   POSITIVES="ql_top1 llm_top1 seed" SEEDS="0 1 2" [TAG=name FIT_ARGS="--model.lr=1e-5"] bash scripts/demo_seeds.sh
# and the mixture ablation, FRet alone against the demo's mixture (FIT_CONFIG, scripts/demo_env.sh):
#   POSITIVES=ql_top1 TAG=fret-only FIT_CONFIG=configs/demo.yaml bash scripts/demo_seeds.sh
# Needs the build and base scores of scripts/demo.sh (outputs/demo/fret, outputs/demo/base.json).
# Re-selecting positives reads the build's stage files: no LLM call. Writes outputs/demo/seeds/ and,
# through `gecko report`, the mean ± std per variant against the base in outputs/demo/seeds/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/demo_env.sh
NEGATIVE=${NEGATIVE:-lowest}

for positive in ${POSITIVES:-ql_top1 llm_top1 seed}; do
  data="$OUT/seeds/fret-$positive-$NEGATIVE"
  if [ ! -s "$data/manifest.json" ]; then
    gecko build fret --from "$OUT/fret" --output_dir "$data" \
      --select.positive="$positive" --select.negative="$NEGATIVE"
  fi
  for seed in ${SEEDS:-0 1 2}; do
    variant="${TAG:+$TAG-}$positive-$NEGATIVE"  # TAG names an experiment
    run="$OUT/seeds/$variant-seed$seed"
    # reused only if labelled for `gecko report` (scores from before --label are scored again)
    grep -qs '"_meta"' "$run/scores.json" && { echo "reusing $run/scores.json"; continue; }
    rm -rf "$run/fit"
    gecko fit --config "$FIT_CONFIG" --model.model_name_or_path="$BASE_MODEL" "$(fret_data_arg "$data")" \
      --data.init_args.seed="$seed" --seed_everything="$seed" --trainer.default_root_dir="$run/fit" ${FIT_ARGS:-}
    ckpt=$(find "$run/fit" -name '*.ckpt' | sort | tail -n 1)
    # Retrieval in the trained format, STS as the base model saw it; one run of the report's cell $variant.
    labels=(--label variant="$variant" --label seed="$seed")
    gecko eval --model "$ckpt" --sts "$STS" --prompts none "${labels[@]}" --output "$run/scores_sts_none.json"
    # and without prompts, as the base model is scored: its own cell, "<variant> no prompts"
    gecko eval --model "$ckpt" --beir "$BEIR" ${SECOND_BEIR:-} --prompts none --label variant="$variant no prompts" \
      --label seed="$seed" --output "$run/scores_none.json"
    gecko eval --model "$ckpt" --beir "$BEIR" ${SECOND_BEIR:-} --prompts "${FT_PROMPTS:-gecko}" "${labels[@]}" --output "$run/scores.json"
  done
done
gecko report "$OUT/base.json" "$OUT/seeds" --output "$OUT/seeds/summary.md"  # and summary.png
