#!/bin/bash
# brigade ranks under torchrun (one process per rank; torchrun sets RANK, WORLD_SIZE,
# MASTER_ADDR and MASTER_PORT, and brigade's rendezvous takes MASTER_PORT + 1). On each node:
#   NODE_RANK=0 MASTER_ADDR=node1 examples/torchrun/train.sh     # node1
#   NODE_RANK=1 MASTER_ADDR=node1 examples/torchrun/train.sh     # node2
set -euo pipefail
brigade plan "${TOPOLOGY:-topologies/quickstart.toml}" --set partition.stages=2 --out job.json
exec torchrun --nnodes=2 --nproc-per-node=1 --node-rank="$NODE_RANK" \
  --master-addr="$MASTER_ADDR" --master-port=29500 \
  --no-python brigade stage job.json --run-id "${RUN_ID:-torchrun-job}"
