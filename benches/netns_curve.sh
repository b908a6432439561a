#!/usr/bin/env bash
# mlp-8x1024 (topologies/mlp-8x1024.toml) as two hosts of one rank each, alternating:
#   NULL  — both hosts on 127.0.0.1 in one network namespace, no job secret (tcp:// NULL);
#   CURVE loopback — the same as NULL under a job secret (tcp:// CURVE, no namespace hop);
#   CURVE — one host per namespace across a veth pair (198.18.0.1, 198.18.0.2), under a job
#           secret, found through the rendezvous (tcp:// CURVE: brigade refuses NULL there).
# Prints each run's median samples/s over its steps after the first 3, and CURVE / NULL.
# Needs root and iproute2.  usage: benches/netns_curve.sh PATH/TO/brigade [STEPS] [PAIRS]
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade [STEPS] [PAIRS]}")
STEPS=${2:-20} PAIRS=${3:-2}
cd "$(dirname "$0")/.."
A="brigade-ca-$$" B="brigade-cb-$$" WORK=$(mktemp -d)
cleanup() {
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add "ca$$" netns "$A" type veth peer name "cb$$" netns "$B"
ip -n "$A" addr add 198.18.0.1/24 dev "ca$$"
ip -n "$B" addr add 198.18.0.2/24 dev "cb$$"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "ca$$" up
ip -n "$B" link set "cb$$" up

# The model, data and training of mlp-8x1024; two hosts of one CPU rank each.
body() { sed -n '1,/^\[\[hosts\]\]/p' topologies/mlp-8x1024.toml | sed '$d'; }
hosts() {
  printf '[[hosts]]\nname = "a"\n%sdevices = ["cpu"]\n\n[[hosts]]\nname = "b"\n%sdevices = ["cpu"]\n\n[partition]\nstages = 2\n' "$1" "$2"
}
{ body; hosts 'address = "127.0.0.1"
' 'address = "127.0.0.1"
'; } > "$WORK/null.toml"
{ body; hosts '' ''; } > "$WORK/curve.toml"

rate() { # median samples/s after the first 3 steps
  python3 -c 'import json,sys,statistics as s; r=[json.loads(l)["samples_per_sec"] for l in open(sys.argv[1]) if "samples_per_sec" in l][3:]; print(f"{s.median(r):.0f}")' "$1"
}
run_null() { # $1: run number; $2: a job secret, or nothing for NULL
  ip netns exec "$A" env -u BRIGADE_SECRET ${2:+BRIGADE_SECRET=$2} "$BRIGADE" launch "$WORK/null.toml" --host a --steps "$STEPS" --run-id "n$1" 2>"$WORK/na.err" &
  local pa=$!
  ip netns exec "$A" env -u BRIGADE_SECRET ${2:+BRIGADE_SECRET=$2} "$BRIGADE" launch "$WORK/null.toml" --host b --steps "$STEPS" --run-id "n$1" --metrics "$WORK/n$1.jsonl" 2>"$WORK/nb.err" || { cat "$WORK/nb.err"; exit 1; }
  wait "$pa" || { cat "$WORK/na.err"; exit 1; }
  rate "$WORK/n$1.jsonl"
}
run_curve() {
  local rv="198.18.0.1:$((29500 + $1))"
  export BRIGADE_SECRET="netns-curve-bench-secret-0123456789"
  ip netns exec "$A" "$BRIGADE" launch "$WORK/curve.toml" --host a --steps "$STEPS" --run-id "c$1" --rendezvous "$rv" 2>"$WORK/ca.err" &
  local pa=$!
  ip netns exec "$B" "$BRIGADE" launch "$WORK/curve.toml" --host b --steps "$STEPS" --run-id "c$1" --rendezvous "$rv" --metrics "$WORK/c$1.jsonl" 2>"$WORK/cb.err" || { cat "$WORK/cb.err"; exit 1; }
  wait "$pa" || { cat "$WORK/ca.err"; exit 1; }
  unset BRIGADE_SECRET
  rate "$WORK/c$1.jsonl"
}
nulls=() los=() curves=()
for i in $(seq 1 "$PAIRS"); do
  n=$(run_null "$i"); l=$(run_null "$((100 + i))" "netns-curve-bench-secret-0123456789"); c=$(run_curve "$i")
  echo "round $i: NULL loopback $n, CURVE loopback $l, CURVE two namespaces $c samples/s"
  nulls+=("$n") los+=("$l") curves+=("$c")
done
python3 - "${nulls[*]}" "${los[*]}" "${curves[*]}" <<'PY'
import sys, statistics as s
n, l, c = (s.median(map(float, a.split())) for a in sys.argv[1:4])
print(f"median samples/s: NULL loopback {n:.0f}, CURVE loopback {l:.0f} ({l / n:.3f} of NULL), "
      f"CURVE two namespaces {c:.0f} ({c / n:.3f} of NULL)")
PY
