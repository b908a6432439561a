#!/usr/bin/env bash
# MLflow tracking against a real server: `mlflow server` (pinned below, installed into a venv) on
# loopback with a SQLite store and proxied artifacts, read back with MLflow's own client
# (check.py beside this file):
#   a. quickstart with --mlflow --metrics --trace --report: params (plan.*, train.*), every step's
#      loss/step_ms/samples_per_sec/lr once at MLflow step = brigade step and equal to the metrics
#      file, the evaluations, the artifacts (plan.json, metrics, trace, report.html), FINISHED,
#      tag brigade.run_id, the run name from [tracking] run_name;
#   b. a rank killed (SIGKILL) mid-run: train fails, the run is FAILED with tag brigade.failure;
#      SIGINT to `brigade train`: the run is KILLED and no stage is left running;
#   c. the server stopped (its whole process group) mid-run and restarted on the same port and
#      store: training exits 0 and every step's loss is in MLflow once;
#   d. a "server" answering 500 to everything, one answering 200 with HTML, and a port nobody
#      listens on: training exits 0 with the losses of a run without tracking and one warning
#      about mlflow (not one per step), and says at the end what did not reach the server;
#   e. --max-restarts with a rank killed after a checkpoint: one MLflow run across the restart,
#      every step's loss once, FINISHED, the restart's cause in tag brigade.restart.1;
#   f. two `stage --max-restarts` agents (as under Slurm): only the last rank's tracks.
# Needs Python 3 with venv and PyPI for the first install (without them: SKIP, or under CI=true
# FAIL, see engine/tests/skip.sh). Takes a few minutes (mostly the server's start-ups).
#
# usage: engine/tests/tracking/run.sh PATH/TO/brigade
#   BRIGADE_MLFLOW_VENV   the venv (default /tmp/brigade-mlflow-venv; reused when it has the pin)
#   BRIGADE_TRACKING_RESTART_STEPS   steps of the run in c (default 300, ~0.2 s each)
#   BRIGADE_TRACKING_PARTS   which of a b c d e f to run (default: all)
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade}")
cd "$(dirname "$0")/../../.."
. engine/tests/skip.sh

MLFLOW_VERSION=3.17.2
VENV=${BRIGADE_MLFLOW_VENV:-/tmp/brigade-mlflow-venv}
PY=$VENV/bin/python
if ! "$PY" -c "import mlflow, sys; sys.exit(mlflow.__version__ != '$MLFLOW_VERSION')" 2>/dev/null; then
  echo "tracking: installing mlflow==$MLFLOW_VERSION into $VENV (a few minutes)"
  { python3 -m venv "$VENV" && "$VENV/bin/pip" install --quiet "mlflow==$MLFLOW_VERSION"; } ||
    skip_or_fail "tracking test" "mlflow $MLFLOW_VERSION" \
      "python3 -m venv $VENV && $VENV/bin/pip install mlflow==$MLFLOW_VERSION (needs PyPI)"
fi
if ! "$BRIGADE" train --help 2>&1 | grep -q -- --mlflow; then
  echo "FAIL: $BRIGADE train has no --mlflow option" >&2
  exit 1
fi
CHECK=(env -u MLFLOW_TRACKING_URI "$PY" engine/tests/tracking/check.py)
unset BRIGADE_SECRET BRIGADE_SECRET_FILE MLFLOW_RUN_ID MLFLOW_TRACKING_TOKEN \
  MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD

WORK=$(mktemp -d)
mkdir -p "$WORK/tmp"
export TMPDIR=$WORK/tmp # brigade's run directories, and the client's downloads, stay in here
GROUPS_STARTED=()       # process groups this script started: servers, trainings
cleanup() {
  local g
  for g in ${GROUPS_STARTED[@]+"${GROUPS_STARTED[@]}"}; do
    kill -KILL -- "-$g" 2>/dev/null || true
    wait "$g" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts "$@" in the background as the leader of a new process group (so it and its children
# can be stopped together), with SIGINT at its default as in a terminal (a non-interactive
# shell's background jobs ignore it). $! is the command's own pid.
spawn() {
  "$PY" -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
os.setpgid(0, 0)
os.execvp(sys.argv[1], sys.argv[1:])' "$@" &
  GROUPS_STARTED+=("$!")
}

# Waits (≤ $2 s) for pid $1 to end; sets RC to its exit status.
wait_exit() {
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$1" 2>/dev/null; then
    echo "FAIL: pid $1 ($3) still running after $2 s" >&2
    exit 1
  fi
  RC=0
  wait "$1" || RC=$?
}

# SIGKILLs rank 1, a child of the `brigade train` whose pid is $1.
kill_rank_1() {
  local stage
  stage=$(pgrep -P "$1" -f -- '--stage 1( |$)' | head -1 || true)
  [ -n "$stage" ] || { echo "FAIL: rank 1 not found among train's children"; ps -ef --forest; exit 1; }
  kill -KILL "$stage"
}

PORT=$("${CHECK[@]}" free-port)
URI=http://127.0.0.1:$PORT
start_server() {
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false spawn "$VENV/bin/mlflow" server --workers 1 \
    --host 127.0.0.1 --port "$PORT" --backend-store-uri "sqlite:///$WORK/mlflow.db" \
    --artifacts-destination "$WORK/artifacts" >>"$WORK/server.log" 2>&1
  SERVER=$!
  "${CHECK[@]}" health "$URI" 180 || { tail -30 "$WORK/server.log"; exit 1; }
}
# Stops the server's whole process group (uvicorn and its workers) and waits for the port.
stop_server() {
  local i
  kill -TERM -- "-$SERVER" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 -- "-$SERVER" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 0
    sleep 0.2
  done
  echo "FAIL: port $PORT still answers after the server's processes were killed" >&2
  exit 1
}

PARTS=${BRIGADE_TRACKING_PARTS:-a b c d e f}
part() { [[ " $PARTS " == *" $1 "* ]]; }

if part a || part b || part c || part e || part f; then
  echo "tracking: starting mlflow server $MLFLOW_VERSION at $URI"
  start_server
fi

# --- a. a finished run, read back ------------------------------------------------------------
if part a; then
  echo "tracking: a. quickstart, 40 steps, evaluations at 20 and 40"
  A=$WORK/a
  mkdir -p "$A"
  "${CHECK[@]}" runs "$URI" quickstart >"$A.before"
  "$BRIGADE" train topologies/quickstart.toml --steps 40 --set eval.every=20 \
    --set tracking.run_name=tracking-test-a --mlflow "$URI" \
    --metrics "$A/metrics.jsonl" --trace "$A/trace.json" --report "$A/report.html" \
    >"$A.out" 2>"$A.err" || { echo "FAIL: train exited $?"; cat "$A.err"; exit 1; }
  RUN=$("${CHECK[@]}" wait-run "$URI" quickstart "$A.before" 1 10) || { cat "$A.err"; exit 1; }
  "${CHECK[@]}" finished "$URI" "$RUN" "$A/metrics.jsonl" "$A/trace.json" "$A/report.html" \
    "$A.err" tracking-test-a || { cat "$A.err"; exit 1; }
  grep -qi "mlflow.*every value reached" "$A.err" ||
    { echo "FAIL: train did not say that every value reached the server"; cat "$A.err"; exit 1; }
fi

# --- b. a failed run and a stopped one ---------------------------------------------------------
if part b; then
  echo "tracking: b. mlp-8x1024, rank 1 killed (SIGKILL) once steps reached the server"
  B=$WORK/b
  mkdir -p "$B"
  "${CHECK[@]}" runs "$URI" mlp-8x1024 >"$B.before"
  spawn "$BRIGADE" train topologies/mlp-8x1024.toml --steps 2000 --mlflow "$URI" \
    --metrics "$B/metrics.jsonl" >"$B.out" 2>"$B.err"
  TRAIN=$!
  RUN=$("${CHECK[@]}" wait-run "$URI" mlp-8x1024 "$B.before" 5 120) || { cat "$B.err"; exit 1; }
  kill_rank_1 "$TRAIN"
  wait_exit "$TRAIN" 60 "train after its rank 1 was killed"
  [ "$RC" -ne 0 ] || { echo "FAIL: train exited 0 though a rank was killed"; cat "$B.err"; exit 1; }
  "${CHECK[@]}" status "$URI" "$RUN" FAILED failure-tag || { cat "$B.err"; exit 1; }

  echo "tracking: b. mlp-8x1024, SIGINT to brigade train"
  "${CHECK[@]}" runs "$URI" mlp-8x1024 >"$B.before2"
  spawn "$BRIGADE" train topologies/mlp-8x1024.toml --steps 2000 --mlflow "$URI" \
    --metrics "$B/metrics2.jsonl" >"$B.out2" 2>"$B.err2"
  TRAIN=$!
  RUN=$("${CHECK[@]}" wait-run "$URI" mlp-8x1024 "$B.before2" 5 120) || { cat "$B.err2"; exit 1; }
  kill -INT "$TRAIN"
  wait_exit "$TRAIN" 60 "train after SIGINT"
  [ "$RC" -ne 0 ] || { echo "FAIL: train exited 0 after SIGINT"; cat "$B.err2"; exit 1; }
  sleep 1
  # Its stages must be gone too (zombies waiting for init to reap them are gone enough).
  LEFT=$(ps -eo pid=,pgid=,stat=,args= | awk -v g="$TRAIN" '$2 == g && $3 !~ /^Z/')
  if [ -n "$LEFT" ]; then
    echo "FAIL: processes of the interrupted train are still running:"
    echo "$LEFT"
    exit 1
  fi
  "${CHECK[@]}" status "$URI" "$RUN" KILLED || { cat "$B.err2"; exit 1; }
fi

# --- e. a restarted job continues its run ------------------------------------------------------
if part e; then
  echo "tracking: e. mlp-8x1024 with --max-restarts 1, rank 1 killed after a checkpoint"
  E=$WORK/e
  mkdir -p "$E"
  "${CHECK[@]}" runs "$URI" mlp-8x1024 >"$E.before"
  spawn "$BRIGADE" train topologies/mlp-8x1024.toml --steps 60 --mlflow "$URI" \
    --max-restarts 1 --restart-backoff 0 --checkpoint-dir "$E/ck" --checkpoint-every 10 \
    --metrics "$E/metrics.jsonl" >"$E.out" 2>"$E.err"
  TRAIN=$!
  RUN=$("${CHECK[@]}" wait-run "$URI" mlp-8x1024 "$E.before" 15 120) || { cat "$E.err"; exit 1; }
  kill_rank_1 "$TRAIN"
  wait_exit "$TRAIN" 300 "train with a restart"
  [ "$RC" -eq 0 ] || { echo "FAIL: train exited $RC after its restart"; cat "$E.err"; exit 1; }
  grep -q "restart 1/1" "$E.err" || { echo "FAIL: the job did not restart"; cat "$E.err"; exit 1; }
  # One run (wait-run fails on a second), every step's loss once, the restart recorded as a tag.
  "${CHECK[@]}" wait-run "$URI" mlp-8x1024 "$E.before" 60 30 >/dev/null || { cat "$E.err"; exit 1; }
  "${CHECK[@]}" losses "$URI" "$RUN" "$E/metrics.jsonl" || { cat "$E.err"; exit 1; }
  "${CHECK[@]}" status "$URI" "$RUN" FINISHED || { cat "$E.err"; exit 1; }
  "$PY" - "$URI" "$RUN" <<'PY' || { cat "$E.err"; exit 1; }
import sys
from mlflow.tracking import MlflowClient
tags = MlflowClient(sys.argv[1]).get_run(sys.argv[2]).data.tags
cause = tags.get("brigade.restart.1", "")
assert "killed" in cause, f"tag brigade.restart.1 is {cause!r}"
print(f"tracking: one run across the restart; brigade.restart.1 = {cause!r}")
PY
fi

# --- f. ranks started one by one (as Slurm does): the last rank's agent tracks -----------------
if part f; then
  echo "tracking: f. quickstart as two stage agents (--max-restarts), the last one with --mlflow"
  F=$WORK/f
  mkdir -p "$F"
  "$BRIGADE" plan topologies/quickstart.toml --out "$F/job.json" >/dev/null 2>&1
  "${CHECK[@]}" runs "$URI" quickstart >"$F.before"
  RV=127.0.0.1:$("${CHECK[@]}" free-port)
  spawn "$BRIGADE" stage "$F/job.json" --stage 0 --rendezvous "$RV" --max-restarts 1 \
    --steps 100 >"$F.out0" 2>"$F.err0"
  AGENT0=$!
  "$BRIGADE" stage "$F/job.json" --stage 1 --rendezvous "$RV" --max-restarts 1 --steps 100 \
    --metrics "$F/metrics.jsonl" --mlflow "$URI" >"$F.out1" 2>"$F.err1" ||
    { echo "FAIL: rank 1's agent exited $?"; cat "$F.err1" "$F.err0"; exit 1; }
  wait_exit "$AGENT0" 60 "rank 0's agent"
  [ "$RC" -eq 0 ] || { echo "FAIL: rank 0's agent exited $RC"; cat "$F.err0"; exit 1; }
  RUN=$("${CHECK[@]}" wait-run "$URI" quickstart "$F.before" 100 30) || { cat "$F.err1"; exit 1; }
  "${CHECK[@]}" losses "$URI" "$RUN" "$F/metrics.jsonl" || { cat "$F.err1"; exit 1; }
  "${CHECK[@]}" status "$URI" "$RUN" FINISHED || { cat "$F.err1"; exit 1; }
  if grep -qi mlflow "$F.err0"; then
    echo "FAIL: rank 0's agent talked to the server"; cat "$F.err0"; exit 1
  fi
fi

# --- c. the server goes away and comes back ----------------------------------------------------
if part c; then
  STEPS=${BRIGADE_TRACKING_RESTART_STEPS:-300}
  echo "tracking: c. mlp-8x1024, $STEPS steps; the server stopped after 20 steps, back 5 s later"
  C=$WORK/c
  mkdir -p "$C"
  "${CHECK[@]}" runs "$URI" mlp-8x1024 >"$C.before"
  spawn "$BRIGADE" train topologies/mlp-8x1024.toml --steps "$STEPS" --mlflow "$URI" \
    --metrics "$C/metrics.jsonl" >"$C.out" 2>"$C.err"
  TRAIN=$!
  RUN=$("${CHECK[@]}" wait-run "$URI" mlp-8x1024 "$C.before" 20 120) || { cat "$C.err"; exit 1; }
  stop_server
  echo "tracking: c. server stopped at step $(wc -l <"$C/metrics.jsonl")"
  sleep 5
  start_server
  BACK_IN_TIME=0
  if kill -0 "$TRAIN" 2>/dev/null; then BACK_IN_TIME=1; fi
  echo "tracking: c. server back at step $(wc -l <"$C/metrics.jsonl")"
  wait_exit "$TRAIN" 600 "train with a restarted server"
  [ "$RC" -eq 0 ] || { echo "FAIL: train exited $RC"; cat "$C.err"; exit 1; }
  if [ "$BACK_IN_TIME" = 1 ]; then
    "${CHECK[@]}" losses "$URI" "$RUN" "$C/metrics.jsonl" || { cat "$C.err"; exit 1; }
    "${CHECK[@]}" status "$URI" "$RUN" FINISHED
    grep -qi "mlflow.*every value reached" "$C.err" ||
      { echo "FAIL: train did not say that every value reached the server"; cat "$C.err"; exit 1; }
  else
    echo "tracking: c. training ended before the server was back (raise BRIGADE_TRACKING_RESTART_STEPS)"
    grep -q "did not reach" "$C.err" ||
      { echo "FAIL: train did not say what did not reach the server"; cat "$C.err"; exit 1; }
  fi
  stop_server
fi

# --- d. servers that fail -------------------------------------------------------------------------
if part d; then
  echo "tracking: d. quickstart (200 steps) against broken servers; first without tracking"
  D=$WORK/d
  mkdir -p "$D"
  "$BRIGADE" train topologies/quickstart.toml --metrics "$D/plain.jsonl" >/dev/null 2>"$D/plain.err" ||
    { cat "$D/plain.err"; exit 1; }
  export BRIGADE_MLFLOW_FLUSH_SECS=2 # how long train waits at the end for what is queued
  for MODE in 500 garbage nobody; do
    BAD=$("${CHECK[@]}" free-port)
    if [ "$MODE" != nobody ]; then
      spawn "${CHECK[@]}" serve "$MODE" "$BAD" 2>"$D/$MODE.server.log"
      FAKE=$!
      for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$BAD") 2>/dev/null && break; sleep 0.1; done
    fi
    echo "tracking: d. server: $MODE"
    "$BRIGADE" train topologies/quickstart.toml --mlflow "http://127.0.0.1:$BAD" \
      --metrics "$D/$MODE.jsonl" >/dev/null 2>"$D/$MODE.err" ||
      { echo "FAIL: train exited $? against the $MODE server"; cat "$D/$MODE.err"; exit 1; }
    "${CHECK[@]}" same-losses "$D/$MODE.jsonl" "$D/plain.jsonl"
    "${CHECK[@]}" quiet-warnings "$D/$MODE.err" 200
    grep -q "did not reach" "$D/$MODE.err" ||
      { echo "FAIL: train did not say what did not reach the server"; cat "$D/$MODE.err"; exit 1; }
    if [ "$MODE" != nobody ]; then
      [ -s "$D/$MODE.server.log" ] || { echo "FAIL: train never called the $MODE server"; exit 1; }
      kill -KILL -- "-$FAKE" 2>/dev/null || true
      wait "$FAKE" 2>/dev/null || true
    fi
  done
fi

echo "tracking: all passed"
