#!/usr/bin/env bash
# What MLflow tracking costs the trainer, measured in one run, alternating: quickstart and
# mlp-8x1024 trained with and without `--mlflow` against a real `mlflow server` on loopback
# (SQLite store, one worker). Prints each run's samples/s (median step after 3 warm-up steps) and
# the median ratio tracked / untracked per model.
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

run() { # topology, steps, extra args... -> samples/s
  local topo=$1 steps=$2
  shift 2
  "$BRIGADE" train "$topo" --steps "$steps" --metrics "$WORK/m.jsonl" "$@" >/dev/null 2>&1
  python3 - "$WORK/m.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(f"{statistics.median(r['samples_per_sec'] for r in rows[3:]):.1f}")
PY
}

for spec in "topologies/quickstart.toml 200" "topologies/mlp-8x1024.toml 30"; do
  set -- $spec
  ratios=()
  for r in $(seq 1 "$ROUNDS"); do
    plain=$(run "$1" "$2")
    tracked=$(run "$1" "$2" --mlflow "http://127.0.0.1:$PORT")
    ratio=$(python3 -c "print(f'{$tracked / $plain:.3f}')")
    ratios+=("$ratio")
    echo "$1 round $r: untracked $plain, tracked $tracked samples/s (ratio $ratio)"
  done
  echo "$1: median tracked / untracked $(printf '%s\n' "${ratios[@]}" | sort -n | sed -n "$(((ROUNDS + 1) / 2))p")"
done
