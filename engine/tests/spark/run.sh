#!/usr/bin/env bash
# Spark barrier mode, for real: PySpark in local-cluster[2,1,1024] (two executor JVMs) runs
# brigade_spark.train on a two-rank plan. Losses equal `brigade reference`, the first time with
# spark.task.cpus = 2 and each rank on the 2 threads its task was given; a rank killed
# mid-run fails the gang, Spark re-runs it, the ranks resume from the last checkpoint and the
# run ends with the uninterrupted run's losses. Then a Spark job writes training data as
# Parquet (docs/data.md) and brigade trains on it, in barrier tasks and on its own launcher,
# equal to the reference and above 95 % test accuracy. Needs Java (without it: SKIP, or under
# CI=true FAIL, see engine/tests/skip.sh); installs PySpark in a venv.
#
# usage: engine/tests/spark/run.sh PATH/TO/brigade
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade}")
cd "$(dirname "$0")/../../.."
. engine/tests/skip.sh

if ! command -v java >/dev/null; then
  skip_or_fail "spark test" "java" "apt-get install openjdk-17-jre-headless; .ci/run does"
fi
VENV=${BRIGADE_SPARK_VENV:-/tmp/brigade-spark-venv}
if ! "$VENV/bin/python" -c 'import pyspark' 2>/dev/null; then
  echo "spark: installing pyspark into $VENV (a few minutes)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet pyspark==4.3.0
fi
"$VENV/bin/pip" install --quiet --no-deps --force-reinstall ./python
export PYSPARK_PYTHON="$VENV/bin/python" SPARK_LOCAL_IP=127.0.0.1
unset BRIGADE_SECRET BRIGADE_SECRET_FILE

WORK=$(mktemp -d)
cleanup() {
  pkill -KILL -f "$WORK/" 2>/dev/null || true
  pkill -KILL -f "brigade-spark-test" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# mlp-8x1024, not quickstart: a step must take long enough (~0.2 s) that rank 1 is still
# running when the kill below looks for it; quickstart's 40 steps can end in under a second.
"$BRIGADE" plan topologies/mlp-8x1024.toml --out "$WORK/job.json" >/dev/null
"$BRIGADE" reference topologies/mlp-8x1024.toml --steps 40 --metrics "$WORK/ref.jsonl" >/dev/null

compare() {  # events file, first and last step to compare
  python3 - "$1" "$WORK/ref.jsonl" "$2" "$3" <<'PY'
import json, sys
events, ref, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
got = {}
for line in open(events):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "step" and e.get("loss") is not None:
        got[e["step"]] = e["loss"]  # a retried run repeats steps: the last one counts
want = {json.loads(l)["step"]: json.loads(l)["loss"] for l in open(ref)}
steps = [s for s in sorted(want) if first <= s <= last]
missing = [s for s in steps if s not in got]
assert not missing, f"no loss for steps {missing}"
for s in steps:
    assert abs(got[s] - want[s]) <= 1e-5 * abs(want[s]), f"step {s}: {got[s]} vs reference {want[s]}"
print(f"spark: losses equal the reference at steps {steps[0]}..{steps[-1]}")
PY
}

echo "spark: training two ranks as a barrier stage, 2 cores a task (local-cluster[2,2,1024], spark.task.cpus=2)"
"$VENV/bin/spark-submit" --conf spark.task.cpus=2 --master 'local-cluster[2,2,1024]' engine/tests/spark/driver.py \
  "$WORK/job.json" "$BRIGADE" 20 "$WORK/ckpt1" >"$WORK/run1.jsonl" 2>"$WORK/run1.err" \
  || { tail -50 "$WORK/run1.err"; exit 1; }
compare "$WORK/run1.jsonl" 1 20
python3 - "$WORK/run1.jsonl" <<'PY'
import json, sys
threads = {}
for line in open(sys.argv[1]):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "started":
        threads[e["stage"]] = e.get("threads")
assert threads == {0: 2, 1: 2}, f"ranks' compute threads {threads}, expected 2 each (spark.task.cpus=2)"
print("spark: both ranks compute on the 2 cores their task was given")
PY

echo "spark: killing rank 1 mid-run; Spark must re-run the gang, which resumes"
"$VENV/bin/spark-submit" --master 'local-cluster[2,1,1024]' engine/tests/spark/driver.py \
  "$WORK/job.json" "$BRIGADE" 40 "$WORK/ckpt2" >"$WORK/run2.jsonl" 2>"$WORK/run2.err" &
SUBMIT=$!
# Kill once a checkpoint exists (step 10), so the retry has something to resume from.
for _ in $(seq 1 600); do
  [ -e "$WORK/ckpt2/step-00000010/stage-1.done" ] && break
  sleep 0.2
done
PID=$(pgrep -f -- "stage $WORK/.*--stage 1 " | head -1 || true)
if [ -z "$PID" ]; then
  PID=$(pgrep -f -- "brigade-spark-1-.*--stage 1" | head -1 || true)
fi
[ -n "$PID" ] || { echo "FAIL: rank 1 not found"; tail -30 "$WORK/run2.err"; exit 1; }
kill -KILL "$PID"
wait "$SUBMIT" || { echo "FAIL: the retried run did not finish"; tail -50 "$WORK/run2.err"; exit 1; }
# The gang ran twice, and the second attempt started past step 1 (from the checkpoint).
python3 - "$WORK/run2.jsonl" <<'PY' || { tail -50 "$WORK/run2.err"; exit 1; }
import json, sys
events = []
for line in open(sys.argv[1]):
    try:
        events.append(json.loads(line))
    except ValueError:
        pass
starts = [i for i, e in enumerate(events) if e.get("event") == "started" and e.get("stage") == 1]
assert len(starts) >= 2, f"rank 1 started {len(starts)} times; Spark did not re-run the gang"
first = next(e["step"] for e in events[starts[-1]:] if e.get("event") == "step" and e.get("stage") == 1)
assert first > 10, f"the retried rank 1 began at step {first}, not from the checkpoint"
print(f"spark: the retried gang resumed at step {first}")
PY
compare "$WORK/run2.jsonl" 11 40
echo "spark: a killed rank was retried by Spark and resumed with the same losses"

echo "spark: a Spark job writes the digits as Parquet part files; brigade trains on them"
"$VENV/bin/spark-submit" --master 'local[2]' engine/tests/spark/prepare.py "$PWD/data/digits" \
  "$WORK/digits" >"$WORK/prep.out" 2>"$WORK/prep.err" || { tail -50 "$WORK/prep.err"; exit 1; }
ls "$WORK/digits/train" | grep -q '^part-' || { echo "FAIL: the Spark job wrote no part files"; exit 1; }
sed -e "s|^path = .*|path = \"$WORK/digits/train\"|" \
  -e "s|^validation = .*|validation = \"$WORK/digits/test\"|" \
  topologies/quickstart.toml >"$WORK/digits.toml"
"$BRIGADE" plan "$WORK/digits.toml" --out "$WORK/digits-job.json" >/dev/null
"$BRIGADE" reference "$WORK/digits.toml" --metrics "$WORK/digits-ref.jsonl" >/dev/null
"$BRIGADE" train "$WORK/digits.toml" --metrics "$WORK/digits-train.jsonl" 2>"$WORK/digits-train.err" \
  || { cat "$WORK/digits-train.err"; exit 1; }
"$VENV/bin/spark-submit" --master 'local-cluster[2,1,1024]' engine/tests/spark/driver.py \
  "$WORK/digits-job.json" "$BRIGADE" 200 "$WORK/ckpt3" >"$WORK/run3.jsonl" 2>"$WORK/run3.err" \
  || { tail -50 "$WORK/run3.err"; exit 1; }
python3 - "$WORK/digits-ref.jsonl" "$WORK/digits-train.jsonl" "$WORK/run3.jsonl" <<'PY'
import json, sys
def lines(path):
    out = []
    for l in open(path):
        try:
            out.append(json.loads(l))
        except ValueError:
            pass
    return out
ref, train, events = (lines(p) for p in sys.argv[1:4])
want = [m["loss"] for m in ref if "loss" in m]
want_val = [m for m in ref if "val_loss" in m]
got = [m["loss"] for m in train if "loss" in m]
assert len(got) == len(want) == 200, (len(got), len(want))
for i, (a, b) in enumerate(zip(got, want)):
    assert abs(a - b) <= 1e-5 * abs(b), f"train step {i + 1}: {a} vs reference {b}"
assert [m for m in train if "val_loss" in m] == want_val, "train's validation figures"
# In barrier tasks: the last rank's step and eval events.
steps = {e["step"]: e["loss"] for e in events if e.get("event") == "step" and e.get("loss") is not None}
for s, b in enumerate(want, 1):
    assert abs(steps[s] - b) <= 1e-5 * abs(b), f"barrier step {s}: {steps[s]} vs reference {b}"
evals = [e for e in events if e.get("event") == "eval"]
assert [(e["step"], e["val_loss"], e["val_accuracy"]) for e in evals] == [
    (m["step"], m["val_loss"], m["val_accuracy"]) for m in want_val
], (evals, want_val)
acc = want_val[-1]["val_accuracy"]
assert acc >= 0.95, f"test accuracy {acc}"
print(f"spark: trained on Spark's Parquet output equal to the reference; test accuracy {acc:.4f}")
PY
