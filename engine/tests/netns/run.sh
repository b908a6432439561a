#!/usr/bin/env bash
# Two hosts in two network namespaces joined by a veth pair (198.18.0.1 and 198.18.0.2, the
# benchmarking range), with no addresses in the topology: `brigade launch --host a` and
# `--host b` find each other through the rendezvous rank 0 hosts, speak CURVE under the job
# secret, and must reproduce `brigade reference`; when the link is cut mid-run both sides must
# exit non-zero within 10 s naming the lost peer. Needs root and iproute2; otherwise prints
# SKIP and exits 0, or under CI=true prints FAIL and exits 1 (engine/tests/skip.sh).
#
# usage: engine/tests/netns/run.sh PATH/TO/brigade
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade}")
cd "$(dirname "$0")/../../.."
. engine/tests/skip.sh

if [ "$(id -u)" != 0 ]; then
  skip_or_fail "netns test" "root" "run it as root: it creates network namespaces"
fi
if ! command -v ip >/dev/null; then
  skip_or_fail "netns test" "iproute2 (ip)" "apt-get install iproute2"
fi
if ! ip netns add "brigade-probe-$$" 2>/dev/null; then
  skip_or_fail "netns test" "network namespaces (ip netns add failed)" "run it where root may create network namespaces (a privileged container or a VM)"
fi
ip netns del "brigade-probe-$$"

A="brigade-a-$$" B="brigade-b-$$" WORK=$(mktemp -d)
cleanup() {
  pkill -KILL -f "$WORK/two.toml" 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$A"
ip netns add "$B"
ip link add "va$$" netns "$A" type veth peer name "vb$$" netns "$B"
ip -n "$A" addr add 198.18.0.1/24 dev "va$$"
ip -n "$B" addr add 198.18.0.2/24 dev "vb$$"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "va$$" up
ip -n "$B" link set "vb$$" up

# (its data paths are relative to topologies/: made absolute for this copy)
sed -n '1,/^\[\[hosts\]\]/p' topologies/quickstart.toml | sed '$d' | sed "s|\"\.\./data/|\"$PWD/data/|" > "$WORK/two.toml"
cat >> "$WORK/two.toml" <<TOML
[[hosts]]
name = "a"
devices = ["cpu"]

[[hosts]]
name = "b"
devices = ["cpu"]

[partition]
stages = 2
TOML
export BRIGADE_SECRET="netns-test-secret-$$-0123456789"

echo "netns: training across $A (198.18.0.1) and $B (198.18.0.2)"
RV=198.18.0.1:29400
ip netns exec "$A" "$BRIGADE" launch "$WORK/two.toml" --host a --steps 20 --run-id netns --rendezvous $RV 2>"$WORK/a.err" &
PA=$!
ip netns exec "$B" "$BRIGADE" launch "$WORK/two.toml" --host b --steps 20 --run-id netns --rendezvous $RV --metrics "$WORK/b.jsonl" 2>"$WORK/b.err" || { cat "$WORK/b.err"; exit 1; }
grep -q "through the rendezvous" "$WORK/b.err" || { echo "FAIL: host b did not use the rendezvous"; cat "$WORK/b.err"; exit 1; }
wait "$PA" || { cat "$WORK/a.err"; exit 1; }
"$BRIGADE" reference "$WORK/two.toml" --steps 20 --metrics "$WORK/ref.jsonl" >/dev/null
python3 - "$WORK/b.jsonl" "$WORK/ref.jsonl" <<'PY'
import json, sys
lines = [[json.loads(l) for l in open(p)] for p in sys.argv[1:3]]
a, b = ([m["loss"] for m in ls if "loss" in m] for ls in lines)
assert len(a) == len(b) == 20, (len(a), len(b))
for i, (x, y) in enumerate(zip(a, b)):
    assert abs(x - y) <= 1e-5 * abs(y), f"step {i + 1}: {x} vs reference {y}"
# The evaluation after the last step, through both namespaces, equals the reference's.
va, vb = ([m for m in ls if "val_loss" in m] for ls in lines)
assert va and va == vb, (va, vb)
print(f"netns: losses equal the reference at all 20 steps; validation {va[-1]}")
PY

echo "netns: cutting the link mid-run"
ip netns exec "$A" "$BRIGADE" launch "$WORK/two.toml" --host a --steps 1000000 --run-id netns-cut --rendezvous 198.18.0.1:29401 2>"$WORK/a2.err" &
PA=$!
ip netns exec "$B" "$BRIGADE" launch "$WORK/two.toml" --host b --steps 1000000 --run-id netns-cut --rendezvous 198.18.0.1:29401 2>"$WORK/b2.err" &
PB=$!
sleep 3
kill -0 "$PA" && kill -0 "$PB" || { echo "FAIL: a side ended before the cut"; cat "$WORK/a2.err" "$WORK/b2.err"; exit 1; }
ip -n "$A" link set "va$$" down
CUT=$(date +%s)
status=0
for p in "$PA" "$PB"; do
  if wait "$p"; then echo "FAIL: a side exited 0 after the cut"; status=1; fi
done
ELAPSED=$(( $(date +%s) - CUT ))
[ "$ELAPSED" -le 10 ] || { echo "FAIL: the sides took ${ELAPSED} s to exit (limit 10 s)"; status=1; }
grep -q "lost peer stage 1" "$WORK/a2.err" || { echo "FAIL: host a does not name the lost peer:"; cat "$WORK/a2.err"; status=1; }
grep -q "lost peer stage 0" "$WORK/b2.err" || { echo "FAIL: host b does not name the lost peer:"; cat "$WORK/b2.err"; status=1; }
[ "$status" = 0 ] && echo "netns: both sides exited non-zero within ${ELAPSED} s naming the lost peer"
exit "$status"
