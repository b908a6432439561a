#!/usr/bin/env bash
# A checkpoint directory that fills up: the job stops with a clear error (the file, "No space
# left on device", what to do), the previous complete checkpoint is intact, and a resume from a
# copy of it on a roomier disk ends with the uninterrupted run's losses. Needs root (a 1 MiB
# tmpfs); otherwise says SKIP, or under CI=true FAIL (engine/tests/skip.sh).
#
# usage: engine/tests/enospc/run.sh PATH/TO/brigade
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade}")
cd "$(dirname "$0")/../../.."
. engine/tests/skip.sh
if [ "$(id -u)" != 0 ]; then
  skip_or_fail "enospc test" "root" "run it as root: it mounts a 1 MiB tmpfs"
fi
WORK=$(mktemp -d)
SMALL="$WORK/small"
mkdir -p "$SMALL"
cleanup() { umount "$SMALL" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
mount -t tmpfs -o size=1m tmpfs "$SMALL"

echo "enospc: checkpoints every 5 steps into a 1 MiB file system"
if "$BRIGADE" train topologies/quickstart.toml --steps 100 --checkpoint-dir "$SMALL/ck" \
    --checkpoint-every 5 2>"$WORK/err"; then
  echo "FAIL: the job did not notice the full disk"; exit 1
fi
grep -q "No space left on device" "$WORK/err" || { echo "FAIL: no ENOSPC in the error"; cat "$WORK/err"; exit 1; }
grep -q "the newest complete checkpoint is intact" "$WORK/err" || { echo "FAIL: no advice"; cat "$WORK/err"; exit 1; }
grep -q "$SMALL/ck/step-" "$WORK/err" || { echo "FAIL: the error does not name the file"; cat "$WORK/err"; exit 1; }

cp -r "$SMALL/ck" "$WORK/ck"
"$BRIGADE" train topologies/quickstart.toml --steps 30 --checkpoint-dir "$WORK/ck" --resume \
  --metrics "$WORK/resumed.jsonl" 2>"$WORK/resume.err" || { cat "$WORK/resume.err"; exit 1; }
"$BRIGADE" reference topologies/quickstart.toml --steps 30 --metrics "$WORK/ref.jsonl" >/dev/null
python3 - "$WORK/resumed.jsonl" "$WORK/ref.jsonl" "$WORK/resume.err" <<'PY'
import json, re, sys
got = {m["step"]: m["loss"] for m in map(json.loads, open(sys.argv[1])) if "loss" in m}
want = {m["step"]: m["loss"] for m in map(json.loads, open(sys.argv[2])) if "loss" in m}
start = int(re.search(r"\(step (\d+)\)", open(sys.argv[3]).read()).group(1))
assert start > 0 and sorted(got) == list(range(start + 1, 31)), (start, sorted(got))
for s in got:
    assert abs(got[s] - want[s]) <= 1e-5 * abs(want[s]), (s, got[s], want[s])
print(f"enospc: clear error; resumed from the intact checkpoint of step {start} with the reference's losses")
PY
