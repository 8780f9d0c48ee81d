#!/usr/bin/env bash
# Gecko end to end on embedded defaults, offline:
#   SmolLM2-135M-Instruct writes queries for SciFact abstracts and re-ranks their neighbours (FRet),
#   all-MiniLM-L6-v2 is evaluated, fine-tuned with `gecko fit` on FRet mixed with SNLI and Banking77 (the
#   paper's mixture, configs/demo_mixture.yaml), exported and evaluated again.
# Every step is the command a user would type. Re-running reuses the LLM cache, the FRet build and the
# base model's scores, so a second run costs only training and evaluation.
#
# Override anything through the environment (scripts/demo_env.sh), e.g. your own corpus and models:
#   BUILD_CONFIG=configs/data/my_corpus.yaml HF_HUB_OFFLINE=0 BASE_MODEL=BAAI/bge-small-en-v1.5 bash scripts/demo.sh
# and pass extra flags to the build and to the fit:
#   OUT=outputs/demo300 BUILD_ARGS="--corpus.num_seeds=300" FIT_ARGS="--trainer.max_epochs=3" bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/demo_env.sh
SEED=${SEED:-0}
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }
mkdir -p "$OUT"

reused=()
step "1/5 build FRet from $BUILD_CONFIG (a finished build of the same config is reused: 0 LLM calls)"
touch "$OUT/.build_started"
gecko build fret --config "$BUILD_CONFIG" --output_dir "$OUT/fret" ${BUILD_ARGS:-}
[ "$OUT/fret/manifest.json" -nt "$OUT/.build_started" ] || reused+=("the FRet build")

step "2/5 evaluate the base model $BASE_MODEL"
base_key="$BASE_MODEL $BEIR ${SECOND_BEIR:-} $STS"  # base.json is reused only for the same model and data
# ... and only if it carries the labels `gecko report` groups by (files from before --label lack them)
if [ -s "$OUT/base.json" ] && [ "$(cat "$OUT/base.key" 2>/dev/null)" = "$base_key" ] \
    && [ "$OUT/base.json" -nt "$BEIR/qrels/test.tsv" ] && grep -q '"variant": "base"' "$OUT/base.json"; then
  echo "reusing $OUT/base.json"
  reused+=("the base model's scores")
else
  # all-MiniLM-L6-v2 was trained without prompts: its best (published) setting is the baseline.
  gecko eval --model "$BASE_MODEL" --beir "$BEIR" ${SECOND_BEIR:-} --sts "$STS" --prompts none --label variant=base --output "$OUT/base.json"
  echo "$base_key" > "$OUT/base.key"
fi

step "3/5 fine-tune with gecko fit (seed $SEED)"
rm -rf "$OUT/fit"
gecko fit --config "$FIT_CONFIG" --model.model_name_or_path="$BASE_MODEL" \
  "$(fret_data_arg "$OUT/fret")" --data.init_args.seed="$SEED" --trainer.default_root_dir="$OUT/fit" --seed_everything="$SEED" ${FIT_ARGS:-}
ckpt=$(find "$OUT/fit" -name '*.ckpt' | sort | tail -n 1)

step "4/5 export $ckpt and evaluate it"
gecko export "$ckpt" "$OUT/model" --overwrite  # a re-run replaces the previous export
# Retrieval in the Gecko format the model was trained on; STS as the base saw it, to show nothing else broke.
# Both files carry the same labels, so `gecko report` merges them into one fine-tuned run.
labels=(--label variant=fine-tuned --label seed="$SEED")
gecko eval --model "$OUT/model" --beir "$BEIR" ${SECOND_BEIR:-} --prompts "${FT_PROMPTS:-gecko}" "${labels[@]}" --output "$OUT/finetuned.json"
gecko eval --model "$OUT/model" --sts "$STS" --prompts none "${labels[@]}" --output "$OUT/finetuned_sts.json"
# Retrieval once more without prompts, as the base is scored: off its training domain the format can
# matter more than the training (docs/results.md). Its own column of the report.
gecko eval --model "$OUT/model" --beir "$BEIR" ${SECOND_BEIR:-} --prompts none --label variant="fine-tuned no prompts" \
  --label seed="$SEED" --output "$OUT/finetuned_none.json"

step "5/5 before/after"
gecko report "$OUT/base.json" "$OUT/finetuned.json" "$OUT/finetuned_sts.json" "$OUT/finetuned_none.json" --output "$OUT/results.md"  # and results.png
if [ ${#reused[@]} -gt 0 ]; then
  echo "reused from an earlier run: $(IFS=,; echo "${reused[*]}" | sed 's/,/, /g'); this run was training and evaluation only"
fi
step "done in $(( $(date +%s) - start ))s; results in $OUT/"
