#!/usr/bin/env bash
# Gecko end to end on embedded defaults, offline:
#   SmolLM2-135M-Instruct writes queries for SciFact abstracts and re-ranks their neighbours (FRet),
#   all-MiniLM-L6-v2 is evaluated, fine-tuned with `gecko fit` on FRet mixed with SNLI and Banking77 (the
#   paper's mixture, configs/demo_mixture.yaml), exported and evaluated again.
# Every step is the command a user would type. Re-running reuses the LLM cache, the FRet build and the
# base model's scores, so a second run costs only training and evaluation.
#
# The build holds out a share of its seeds as a test split labelled by the LLM (<build>/test, docs/fret.md),
# so the report has a before/after even for a corpus nobody labelled:
#   CORPUS=path/to/passages.jsonl bash scripts/demo.sh        # with BEIR=path/to/beir too, it reports both
#   CORPUS=path/to/passages.jsonl QUERIES=path/to/queries.txt bash scripts/demo.sh   # your query log, no labels
# Override anything through the environment (scripts/demo_env.sh), e.g. your own corpus and models:
#   BUILD_CONFIG=configs/data/my_corpus.yaml HF_HUB_OFFLINE=0 BASE_MODEL=BAAI/bge-small-en-v1.5 bash scripts/demo.sh
# Score the tuned model with Gecko prompts as well as without (two columns; without is the default):
#   FT_PROMPTS=both bash scripts/demo.sh
# and pass extra flags to the build and to the fit:
#   OUT=outputs/demo300 BUILD_ARGS="--corpus.num_seeds=300" FIT_ARGS="--trainer.max_epochs=3" bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/demo_env.sh
SEED=${SEED:-0}
FT_PROMPTS=${FT_PROMPTS:-none}  # how the tuned model is scored: none, gecko or both (step 4/5)
case "$FT_PROMPTS" in none|gecko|both) ;; *) echo "FT_PROMPTS=$FT_PROMPTS: expected none, gecko or both" >&2; exit 2 ;; esac
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }
mkdir -p "$OUT"
# W&B, offline unless a key is set (docs/tracking.md): the build, the fit and each eval are runs under $OUT,
# linked build -> dataset -> fit -> model -> eval; `gecko sync "$OUT"` uploads them later. WANDB=0: none.
track_build=() track_fit=() track_eval=()
if [ "${WANDB:-1}" != 0 ]; then
  track_build=(--tracking.wandb=true) track_eval=(--wandb --wandb-dir "$OUT")
  # the fit exports its model itself, so the model artifact comes from the fit's run
  track_fit=(--trainer.logger=gecko_lightning.tracking.GeckoWandbLogger --trainer.logger.init_args.export_model="$OUT/model")
fi

reused=()
step "1/5 build FRet from $BUILD_CONFIG${CORPUS:+ on $CORPUS} (a finished build of the same config is reused: 0 LLM calls)"
touch "$OUT/.build_started"
gecko build fret --config "$BUILD_CONFIG" ${CORPUS:+--corpus.path="$CORPUS"} "${query_log[@]}" "${track_build[@]}" --output_dir "$OUT/fret" ${BUILD_ARGS:-}
[ "$OUT/fret/manifest.json" -nt "$OUT/.build_started" ] || reused+=("the FRet build")
split="$OUT/fret/test"  # the build's held-out queries, labelled by its LLM (none with test_split.fraction: 0)
[ -d "$split" ] || split=""
human=()  # the human-labelled retrieval sets, if any
[ -n "$BEIR" ] && human=(--beir "$BEIR" ${SECOND_BEIR:-})
if [ -z "$BEIR" ] && [ -z "$split" ]; then
  echo "no BEIR folder and no test split in the build: nothing to compare on; set BEIR or test_split.fraction > 0" >&2
  exit 2
fi
# Score a model on the build's split: `--label qrels=llm` makes the report mark those rows as LLM-labelled.
eval_split() {  # MODEL PROMPTS OUTPUT LABEL...
  local model=$1 prompts=$2 output=$3; shift 3
  if [ -n "$split" ]; then
    gecko eval --model "$model" --beir "$split" --prompts "$prompts" --label qrels=llm "$@" "${track_eval[@]}" --output "$output"
  else
    rm -f "$output"
  fi
}

step "2/5 evaluate the base model $BASE_MODEL"
base_key="$BASE_MODEL $BEIR ${SECOND_BEIR:-} $STS"  # base.json is reused only for the same model and data
# ... and only if it carries the labels `gecko report` groups by (files from before --label lack them)
if [ -s "$OUT/base.json" ] && [ "$(cat "$OUT/base.key" 2>/dev/null)" = "$base_key" ] \
    && { [ -z "$BEIR" ] || [ "$OUT/base.json" -nt "$BEIR/qrels/test.tsv" ]; } && grep -q '"variant": "base"' "$OUT/base.json"; then
  echo "reusing $OUT/base.json"
  reused+=("the base model's scores")
else
  # all-MiniLM-L6-v2 was trained without prompts: its best (published) setting is the baseline.
  gecko eval --model "$BASE_MODEL" "${human[@]}" --sts "$STS" --prompts none --label variant=base "${track_eval[@]}" --output "$OUT/base.json"
  echo "$base_key" > "$OUT/base.key"
fi
eval_split "$BASE_MODEL" none "$OUT/base_split.json" --label variant=base  # the split changes with the build

step "3/5 fine-tune with gecko fit (seed $SEED)"
rm -rf "$OUT/fit"
gecko fit --config "$FIT_CONFIG" --model.model_name_or_path="$BASE_MODEL" \
  "$(fret_data_arg "$OUT/fret")" --data.init_args.seed="$SEED" --trainer.default_root_dir="$OUT/fit" --seed_everything="$SEED" "${track_fit[@]}" ${FIT_ARGS:-}
ckpt=$(find "$OUT/fit" -name '*.ckpt' | sort | tail -n 1)

step "4/5 export $ckpt and evaluate it"
# a re-run replaces the previous export; with W&B on, the fit has written it already
[ ${#track_fit[@]} -gt 0 ] || gecko export "$ckpt" "$OUT/model" --overwrite
# The tuned model is scored as the base is, without prompts (FT_PROMPTS=none, the default): on the demo's
# sets it scores higher that way than with the Gecko prompts it was trained with, most of all off its
# domain (WikiQA; docs/results.md). FT_PROMPTS=gecko scores retrieval with them instead; FT_PROMPTS=both
# both ways, in two columns of the report (about 2.5 minutes more). STS is scored without prompts either
# way, as the base saw it, to show nothing else broke. Files with the same labels form one run of the report.
scores=("$OUT/base.json")
[ -z "$split" ] || scores+=("$OUT/base_split.json")
rm -f "$OUT"/finetuned*.json  # this run's columns only
eval_tuned() {  # PROMPTS NAME VARIANT [more gecko eval flags]: the human sets (and the flags), then the split
  local prompts=$1 name=$2
  local labels=(--label variant="$3" --label seed="$SEED")
  shift 3
  if [ -n "$BEIR" ] || [ $# -gt 0 ]; then
    gecko eval --model "$OUT/model" "${human[@]}" "$@" --prompts "$prompts" "${labels[@]}" "${track_eval[@]}" --output "$OUT/$name.json"
    scores+=("$OUT/$name.json")
  fi
  if [ -n "$split" ]; then
    eval_split "$OUT/model" "$prompts" "$OUT/${name}_split.json" "${labels[@]}"
    scores+=("$OUT/${name}_split.json")
  fi
}
case "$FT_PROMPTS" in
  none) eval_tuned none finetuned fine-tuned --sts "$STS" ;;
  gecko)
    eval_tuned gecko finetuned fine-tuned
    gecko eval --model "$OUT/model" --sts "$STS" --prompts none --label variant=fine-tuned --label seed="$SEED" \
      "${track_eval[@]}" --output "$OUT/finetuned_sts.json"
    scores+=("$OUT/finetuned_sts.json") ;;
  both)
    eval_tuned gecko finetuned fine-tuned
    eval_tuned none finetuned_none "fine-tuned no prompts" --sts "$STS" ;;
esac

step "5/5 before/after"
# ... with the build's minutes and LLM calls per stage and its training records (from its manifest)
gecko report "${scores[@]}" --build "$OUT/fret" --output "$OUT/results.md"  # and results.png
if [ ${#reused[@]} -gt 0 ]; then
  echo "reused from an earlier run: $(IFS=,; echo "${reused[*]}" | sed 's/,/, /g'); this run was training and evaluation only"
fi
[ ${#track_eval[@]} -eq 0 ] || echo "W&B runs (offline unless a key is set): gecko sync $OUT --dry-run lists them, gecko sync $OUT uploads them"
step "done in $(( $(date +%s) - start ))s; results in $OUT/"
