#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun (no scheduler). Arguments go to `gecko fit`.
# One node, every GPU:
#   scripts/torchrun_train.sh --config configs/gecko_base.yaml --config configs/strategy/deepspeed_zero2.yaml
# Two nodes: run on each node, with NODE_RANK 0 and 1 and the address of node 0:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/torchrun_train.sh --config ...
# CPU check of the launch path (2 processes, gloo):
#   NPROC_PER_NODE=2 scripts/torchrun_train.sh --config configs/tiny.yaml --trainer.accelerator=cpu --trainer.strategy=ddp
# trainer.num_nodes and trainer.devices are set from NNODES and NPROC_PER_NODE.
set -euo pipefail

NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
NPROC_PER_NODE="${NPROC_PER_NODE:-$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')}"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"

export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

echo "gecko: node ${NODE_RANK} of ${NNODES}, ${NPROC_PER_NODE} process(es) on this node"
exec torchrun --nnodes="${NNODES}" --node_rank="${NODE_RANK}" --nproc_per_node="${NPROC_PER_NODE}" \
    --master_addr="${MASTER_ADDR}" --master_port="${MASTER_PORT}" \
    -m gecko_lightning fit "$@" --trainer.num_nodes="${NNODES}" --trainer.devices="${NPROC_PER_NODE}"
