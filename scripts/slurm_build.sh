#!/usr/bin/env bash
# A sharded FRet build as a chain of Slurm jobs, each started only when the one before succeeded
# (--dependency=afterok): embed the corpus (an array over corpus slices), merge the slices into the
# search index, build the seed shards (an array, one shard per task: `gecko build fret` reads its
# shard from SLURM_ARRAY_TASK_ID), then merge the shards into OUT. docs/fret.md, "Sharded builds".
# Run it from the repository root on a login node; everything after `--` goes to every build command:
#   scripts/slurm_build.sh --shards 16 --slices 4 --output_dir outputs/fret_wiki -- \
#       --config configs/data/fret_wiki.yaml --llm.backend=vllm
# sbatch flags per job come from the environment (defaults in brackets): EMBED_SBATCH ["--gpus=1
# --time=04:00:00"], INDEX_SBATCH ["--time=01:00:00"], SHARD_SBATCH ["--gpus=1 --time=24:00:00"],
# MERGE_SBATCH ["--time=02:00:00"]. --dry-run prints the sbatch commands instead of submitting them.
set -euo pipefail

usage="usage: $0 --shards N [--slices M] --output_dir OUT [--dry-run] -- --config FILE [--section.key=value ...]"
shards="" slices=1 out="" dry=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --shards) shards="$2"; shift 2 ;;
        --slices) slices="$2"; shift 2 ;;
        --output_dir) out="$2"; shift 2 ;;
        --dry-run) dry=1; shift ;;
        --) shift; break ;;
        *) echo "$0: unknown argument '$1'; $usage" >&2; exit 2 ;;
    esac
done
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --shards must be a positive integer, got '$shards'; $usage" >&2; exit 2; }
[[ "$slices" =~ ^[1-9][0-9]*$ ]] || { echo "$0: --slices must be a positive integer, got '$slices'; $usage" >&2; exit 2; }
[[ -n "$out" ]] || { echo "$0: --output_dir is required (the shards, the index and the merged build go there); $usage" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "$0: give the build flags after --, at least --config FILE; $usage" >&2; exit 2; }

read -r -a embed_flags <<< "${EMBED_SBATCH:---gpus=1 --time=04:00:00}"
read -r -a index_flags <<< "${INDEX_SBATCH:---time=01:00:00}"
read -r -a shard_flags <<< "${SHARD_SBATCH:---gpus=1 --time=24:00:00}"
read -r -a merge_flags <<< "${MERGE_SBATCH:---time=02:00:00}"
build="gecko build fret $(printf '%q ' "$@")--output_dir=$(printf '%q' "$out")"

# Submit job NAME with the given sbatch flags; prints its id (with --dry-run, the command and "NAME.jobid").
submit() {
    local name="$1"; shift
    if [[ $dry == 1 ]]; then
        printf 'sbatch --job-name=%s' "$name" >&2; printf ' %q' "$@" >&2; printf '\n' >&2
        echo "$name.jobid"
    else
        sbatch --parsable --chdir="$PWD" --job-name="$name" "$@" | cut -d';' -f1   # "id;cluster" on multi-cluster sites
    fi
}

# Slices 0..M-1 each embed their part; with one slice the embed job also writes the index.
if [[ $slices -gt 1 ]]; then
    embed=$(submit fret-embed --array="0-$((slices - 1))" "${embed_flags[@]}" --wrap="$build --stage embed")
    index=$(submit fret-index --dependency="afterok:$embed" "${index_flags[@]}" --wrap="$build --stage index")
else
    index=$(submit fret-embed "${embed_flags[@]}" --wrap="$build --stage embed")
fi
# afterok on an array job waits for every task of it.
build_job=$(submit fret-shard --array="0-$((shards - 1))" --dependency="afterok:$index" "${shard_flags[@]}" --wrap="$build")
merge=$(submit fret-merge --dependency="afterok:$build_job" "${merge_flags[@]}" \
    --wrap="gecko build fret --merge $(printf '%q' "$out")/shard-*-of-$shards --output_dir=$(printf '%q' "$out")")
echo "submitted: index ${index}, shards ${build_job} (array of ${shards}), merge ${merge} -> ${out}" >&2
