#!/usr/bin/env bash
# brigade against PyTorch's own pipelining on the same CPU work, measured in one run, alternating:
# mlp-8x1024 (8 x [Linear 1024 + ReLU] + Linear 10, batch 256, 8 micro-batches, SGD), 2 stages x
# 1 compute thread, GPipe and 1F1B. Prints each run's samples/s and, per schedule, the median
# ratio brigade / torch. Then the one-core micro-batched step (forward, backward, optimizer) and
# the GEMM shapes of one layer, for both (`cargo bench --bench step`, `--bench gemm_shapes`).
#
# usage: benches/torch/compare.sh [ROUNDS]      (default 3; run it on an otherwise idle machine)
# PyTorch: $TORCH_PYTHON, else python3 — a Python with torch 2.15 (benches/torch/requirements.txt;
# PyPI has only the CUDA build, 5+ GB, which runs fine on CPU):
#   python3 -m venv ~/.venv-torch && ~/.venv-torch/bin/pip install -r benches/torch/requirements.txt
#   TORCH_PYTHON=~/.venv-torch/bin/python benches/torch/compare.sh
# Without torch it says SKIP and exits 0, or under CI=true says FAIL and exits 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
PY=${TORCH_PYTHON:-python3}
. engine/tests/skip.sh
if ! "$PY" -c 'import torch' 2>/dev/null; then
  skip_or_fail "torch comparison" "torch in $PY" "install it (see the top of $0) and set TORCH_PYTHON"
fi
cargo build --release -q -p brigade-engine
BRIGADE=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/brigade
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

brigade_run() { # schedule, batch_weight_grads -> samples/s (median step after 3 warm-up steps)
  "$BRIGADE" train topologies/mlp-8x1024.toml --set partition.stages=2 --set "train.schedule=$1" \
    --set "train.batch_weight_grads=$2" --steps 20 --metrics "$WORK/m.jsonl" >/dev/null 2>&1
  python3 - "$WORK/m.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][3:]
print(f"{256 / statistics.median(r['step_ms'] for r in rows) * 1e3:.0f}")
PY
}

torch_run() { # schedule -> samples/s
  "$PY" benches/torch/torch_pipe_bench.py --schedule "$1" --steps 20 2>/dev/null |
    tail -1 | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(round(d["samples_per_sec"]), d["loadavg_1m_at_end"])'
}

echo "mlp-8x1024, 2 stages x 1 thread, batch 256, 8 micro-batches, SGD ($(nproc) cores, $ROUNDS rounds)"
for schedule in gpipe 1f1b; do
  ratios=() per_mb=()
  for r in $(seq 1 "$ROUNDS"); do
    read -r t load < <(torch_run "$schedule")
    b=$(brigade_run "$schedule" true)
    p=$(brigade_run "$schedule" false)
    ratios+=("$(python3 -c "print(f'{$b / $t:.2f}')")")
    per_mb+=("$(python3 -c "print(f'{$p / $t:.2f}')")")
    echo "  $schedule round $r: torch $t samples/s (load $load); brigade $b (batch_weight_grads), $p (per micro-batch)"
  done
  med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
  echo "$schedule: median ratio brigade / torch $(med "${ratios[@]}") with batch_weight_grads, $(med "${per_mb[@]}") without"
done

echo "one core, the 8 x 32 micro-batched step and one layer's GEMM shapes:"
"$PY" benches/torch/torch_step.py | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
s = d["step_8x32"]
print("  torch   step %.1f ms: forward %.1f, backward %.1f, optimizer %.1f"
      % (s["step_ms"], s["forward_ms"], s["backward_ms"], s["optimizer_ms"]))
for k, v in d["gemm"].items():
    print("  torch   %-30s %7.3f ms %6.1f GFLOP/s" % (k, v["ms"], v["gflops"]))
'
cargo bench -q -p brigade-benches --bench step 2>/dev/null | sed 's/^/  brigade /'
cargo bench -q -p brigade-benches --bench gemm_shapes 2>/dev/null | sed 's/^/  brigade /'
