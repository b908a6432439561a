#!/usr/bin/env bash
# What MLflow tracking costs the trainer, measured in one run, alternating: quickstart and
# mlp-8x1024 trained with and without `--mlflow` against a real `mlflow server` on loopback
# (SQLite store, one worker). Prints each run's samples/s (median step after 3 warm-up steps) and
# the median ratio tracked / untracked per model, next to two untracked runs' ratio (the noise),
# and the CPU seconds brigade's processes (launcher and ranks) used in each run.
#
# usage: benches/tracking_overhead.sh PATH/TO/brigade [ROUNDS]      (default 3; an idle machine)
# MLflow: $MLFLOW_VENV (default /tmp/brigade-mlflow-venv), installed if missing (as
# engine/tests/tracking/run.sh does).
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade [ROUNDS]}")
ROUNDS=${2:-3}
cd "$(dirname "$0")/.."
VENV=${MLFLOW_VENV:-/tmp/brigade-mlflow-venv}
if ! "$VENV/bin/python" -c 'import mlflow' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "mlflow==3.17.2"
fi
WORK=$(mktemp -d)
PORT=$((20000 + RANDOM % 20000))
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$VENV/bin/mlflow" server --host 127.0.0.1 \
  --port "$PORT" --workers 1 --backend-store-uri "sqlite:///$WORK/mlflow.db" \
  --artifacts-destination "$WORK/artifacts" >"$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill -TERM -- -$SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.5
done

run() { # topology, steps, extra args... -> "samples/s cpu_s" (brigade's processes' CPU seconds)
  python3 - "$BRIGADE" "$WORK/m.jsonl" "$@" <<'PY'
import json, resource, statistics, subprocess, sys
brigade, metrics, topo, steps, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
subprocess.run([brigade, "train", topo, "--steps", steps, "--metrics", metrics, *extra],
               check=True, capture_output=True)
use = resource.getrusage(resource.RUSAGE_CHILDREN)
rows = [json.loads(l) for l in open(metrics) if '"loss"' in l]
print(f"{statistics.median(r['samples_per_sec'] for r in rows[3:]):.1f} {use.ru_utime + use.ru_stime:.2f}")
PY
}

# Each round: untracked, tracked, untracked again; the two untracked runs' ratio is the noise
# the tracked one is judged against.
for spec in "topologies/quickstart.toml 200" "topologies/mlp-8x1024.toml 30"; do
  set -- $spec
  ratios=()
  noise=()
  for r in $(seq 1 "$ROUNDS"); do
    read -r a ca < <(run "$1" "$2")
    read -r tracked ct < <(run "$1" "$2" --mlflow "http://127.0.0.1:$PORT")
    read -r b cb < <(run "$1" "$2")
    ratio=$(python3 -c "print(f'{2 * $tracked / ($a + $b):.3f}')")
    n=$(python3 -c "print(f'{$b / $a:.3f}')")
    ratios+=("$ratio")
    noise+=("$n")
    echo "$1 round $r: untracked $a, tracked $tracked, untracked $b samples/s (tracked / untracked $ratio; untracked / untracked $n); brigade CPU s $ca, $ct, $cb"
  done
  med() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
  echo "$1: median tracked / untracked $(med "${ratios[@]}"); untracked runs against each other $(printf '%s\n' "${noise[@]}" | sort -n | tr '\n' ' ')"
done
