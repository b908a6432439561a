#!/usr/bin/env bash
# brigade's data parallelism against PyTorch DistributedDataParallel on the same CPU work, one run,
# alternating: mlp-8x1024 (8 x [Linear 1024 + ReLU] + Linear 10, SGD), global batch 256 over 2
# replicas (128 rows each), 1 stage x 1 compute thread per replica — brigade `replicas = 2,
# stages = 1` (2 processes, gradients summed in `[partition] bucket_mb` buckets over ipc:// links)
# against DDP (gloo, 2 processes x 1 thread, 25 MiB buckets overlapping the backward). PyTorch runs
# the replica's 128 rows as one micro-batch and as 4 accumulated ones (no_sync); brigade as one
# micro-batch, plain, with `train.batch_weight_grads` (its buckets then start as the step's weight
# products finish), and with that and 4 MiB buckets. (brigade at 4 micro-batches a replica runs
# ~0.6x its one-micro-batch speed on this machine: not a contender.)
# Prints each run's samples/s and the ratio of the bests.
#
# usage: benches/torch/ddp_compare.sh [ROUNDS]      (default 3; on an otherwise idle machine)
# PyTorch: $TORCH_PYTHON, else python3 — a Python with torch 2.15 (PyPI has only the CUDA build,
# 5+ GB, which runs fine on CPU):
#   python3 -m venv ~/.venv-torch && ~/.venv-torch/bin/pip install -r benches/torch/requirements.txt
#   TORCH_PYTHON=~/.venv-torch/bin/python benches/torch/ddp_compare.sh
# $BRIGADE: the binary to measure (default: built here with --release).
# Without torch it says SKIP and exits 0, or under CI=true says FAIL and exits 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
PY=${TORCH_PYTHON:-python3}
. engine/tests/skip.sh
if ! "$PY" -c 'import torch' 2>/dev/null; then
  skip_or_fail "DDP comparison" "torch in $PY" "install it (see the top of $0) and set TORCH_PYTHON"
fi
if [ -z "${BRIGADE:-}" ]; then
  cargo build --release -q -p brigade-engine
  BRIGADE=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/brigade
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

brigade_run() { # micro-batches (all replicas), batch_weight_grads, bucket_mb -> samples/s
  "$BRIGADE" train topologies/mlp-8x1024.toml --set partition.stages=1 --set partition.replicas=2 \
    --set "train.microbatches=$1" --set "train.batch_weight_grads=$2" --set "partition.bucket_mb=$3" \
    --steps 20 --metrics "$WORK/m.jsonl" >/dev/null 2>&1
  python3 - "$WORK/m.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][3:]
print(f"{256 / statistics.median(r['step_ms'] for r in rows) * 1e3:.0f}")
PY
}

torch_run() { # micro-batches per replica -> samples/s load
  "$PY" benches/torch/torch_ddp_bench.py --microbatches "$1" --steps 20 2>/dev/null |
    tail -1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(round(d["samples_per_sec"]), d["loadavg_1m_at_end"])'
}

echo "mlp-8x1024, 2 replicas x 1 stage x 1 thread, global batch 256, SGD ($(nproc) cores, $ROUNDS rounds)"
best_ratios=()
for r in $(seq 1 "$ROUNDS"); do
  read -r t1 load < <(torch_run 1)
  b1=$(brigade_run 2 false 25)
  read -r t4 _ < <(torch_run 4)
  b1w=$(brigade_run 2 true 25)
  b1w4=$(brigade_run 2 true 4)
  echo "  round $r: torch DDP $t1 samples/s (1 micro-batch a replica; load $load), $t4 (4 accumulated)"
  echo "           brigade $b1 (1 micro-batch a replica), $b1w (batch_weight_grads), $b1w4 (batch_weight_grads, 4 MiB buckets)"
  best_ratios+=("$(python3 -c "print(f'{max($b1, $b1w, $b1w4) / max($t1, $t4):.2f}')")")
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "median ratio brigade best / torch DDP best: $(med "${best_ratios[@]}") (rounds: ${best_ratios[*]})"
