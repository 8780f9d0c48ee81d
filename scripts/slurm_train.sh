#!/usr/bin/env bash
# Multi-node training under SLURM: one task per GPU; Lightning reads SLURM's rank variables.
# Submit from the repository root; arguments go to `gecko fit`, and the #SBATCH lines are defaults
# that sbatch flags override:
#   sbatch --nodes=4 scripts/slurm_train.sh --config configs/gecko_base.yaml \
#       --config configs/strategy/deepspeed_zero2.yaml --model.grad_cache_chunk_size=256
# trainer.num_nodes and trainer.devices are set from SLURM_NNODES and SLURM_NTASKS_PER_NODE, so the
# YAML never needs editing when the allocation changes.
#SBATCH --job-name=gecko
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"   # sbatch runs a spooled copy of this script; configs are repo-relative
NODES="${SLURM_NNODES:?run this with sbatch (SLURM_NNODES is unset)}"
TASKS="${SLURM_NTASKS_PER_NODE:?set --ntasks-per-node to the GPUs per node}"
TASKS="${TASKS%%(*}"          # "8(x4)" -> "8" when SLURM writes the repeat count

export TORCH_NCCL_ASYNC_ERROR_HANDLING=1   # a rank that dies ends the job instead of hanging it
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-8}"

echo "gecko: ${NODES} node(s) x ${TASKS} GPU(s), job ${SLURM_JOB_ID:-?}"
srun --kill-on-bad-exit=1 gecko fit "$@" --trainer.num_nodes="${NODES}" --trainer.devices="${TASKS}"
