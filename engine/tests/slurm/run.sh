#!/usr/bin/env bash
# Slurm for real: a two-node cluster (slurmctld + one slurmd per network namespace, nodes bn1
# and bn2 at 198.18.0.11/.12 on a bridge) runs `sbatch --wait -c 2` of two brigade ranks, one per
# node, each computing on the 2 threads its task was given, found through the rendezvous on the first node, under a job secret (CURVE): losses
# equal `brigade reference`. Then a rank killed mid-run makes the job FAILED within seconds
# with no brigade process left; with --max-restarts the ranks restart and the job completes with
# the reference's losses. Needs root; installs Slurm and munge from Debian's packages;
# tears everything down by pid. Without root or iproute2 prints SKIP and exits 0, or under
# CI=true prints FAIL and exits 1 (engine/tests/skip.sh).
#
# usage: engine/tests/slurm/run.sh PATH/TO/brigade
set -euo pipefail
BRIGADE=$(realpath "${1:?usage: $0 PATH/TO/brigade}")
cd "$(dirname "$0")/../../.."
. engine/tests/skip.sh

if [ "$(id -u)" != 0 ]; then
  skip_or_fail "slurm test" "root" "run it as root: it installs Slurm and runs its daemons in network namespaces"
fi
if ! command -v ip >/dev/null; then
  skip_or_fail "slurm test" "iproute2 (ip)" "apt-get install iproute2"
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm: installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurm-wlm munge slurmctld slurmd slurm-client >/dev/null
fi

WORK=$(mktemp -d /tmp/brigade-slurm.XXXXXX)
chmod 755 "$WORK"
BR=brbrg$$
N1=bn1-$$ N2=bn2-$$
HOSTS_TAG="# brigade-slurm-test $$"
CONF="$WORK/slurm.conf"
export SLURM_CONF="$CONF"
# slurmstepd processes that exist before the test are not ours.
BEFORE=" $( (pgrep -x slurmstepd || true) | tr '\n' ' ') "
cleanup() {
  set +e
  scancel --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null
  sleep 0.5
  for f in "$WORK"/slurmd-*.pid "$WORK"/slurmctld.pid "$WORK"/munged.pid; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null
  done
  for p in $(pgrep -x slurmstepd || true); do
    case "$BEFORE" in *" $p "*) ;; *) kill -KILL "$p" 2>/dev/null ;; esac
  done
  pkill -KILL -f "$WORK/job" 2>/dev/null
  ip netns del "$N1" 2>/dev/null
  ip netns del "$N2" 2>/dev/null
  ip link del "$BR" 2>/dev/null
  sed -i "/$HOSTS_TAG/d" /etc/hosts
  rm -rf "$WORK"
}
trap cleanup EXIT

# munge, as its own user, with a key of this test's.
mkdir -p /etc/munge "$WORK/munge"
chown munge: "$WORK/munge"
if [ ! -s /etc/munge/munge.key ]; then
  head -c 1024 /dev/urandom >/etc/munge/munge.key
fi
chown munge: /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge: /run/munge /var/log/munge /var/lib/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged --pid-file="$WORK/munge/munged.pid" --force
  cp "$WORK/munge/munged.pid" "$WORK/munged.pid" 2>/dev/null || true
  for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

# Two nodes in namespaces on a bridge; the controller on the bridge's address.
ip link add "$BR" type bridge
ip addr add 198.18.0.1/24 dev "$BR"
ip link set "$BR" up
i=0
for ns in "$N1" "$N2"; do
  i=$((i + 1))
  ip netns add "$ns"
  ip link add "v$i-$$" type veth peer name "p$i-$$"
  ip link set "v$i-$$" master "$BR" up
  ip link set "p$i-$$" netns "$ns"
  ip -n "$ns" addr add "198.18.0.1$i/24" dev "p$i-$$"
  ip -n "$ns" link set "p$i-$$" up
  ip -n "$ns" link set lo up
done
printf '198.18.0.11 bn1 %s\n198.18.0.12 bn2 %s\n' "$HOSTS_TAG" "$HOSTS_TAG" >>/etc/hosts

PORT=$((16800 + $$ % 1000))
cat >"$CONF" <<CONFEOF
ClusterName=brigade$$
SlurmctldHost=$(hostname -s)(198.18.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool-%n
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd-%n.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd-%n.log
SlurmdParameters=config_overrides
NodeName=bn1 NodeAddr=198.18.0.11 CPUs=2 State=UNKNOWN
NodeName=bn2 NodeAddr=198.18.0.12 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=bn1,bn2 Default=YES MaxTime=INFINITE State=UP
CONFEOF
mkdir -p "$WORK/state"
slurmctld -i -f "$CONF"
for n in 1 2; do
  ns=$([ $n = 1 ] && echo "$N1" || echo "$N2")
  nsenter --net="/run/netns/$ns" unshare --uts sh -c "hostname bn$n; exec slurmd -f '$CONF' -N bn$n"
done
for _ in $(seq 1 100); do
  [ "$(sinfo -h -o '%T' 2>/dev/null | grep -c idle)" -ge 1 ] && \
    [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -c idle)" = 2 ] && break
  sleep 0.2
done
[ "$(sinfo -h -N -o '%T' | grep -c idle)" = 2 ] || { echo "FAIL: slurm nodes not idle"; sinfo -N; tail -20 "$WORK/slurmctld.log"; exit 1; }

# quickstart on two hosts without addresses: ranks meet through the rendezvous on bn1.
# (its data paths are relative to topologies/: made absolute for this copy)
sed -n '1,/^\[\[hosts\]\]/p' topologies/quickstart.toml | sed '$d' | sed "s|\"\.\./data/|\"$PWD/data/|" >"$WORK/two.toml"
printf '[[hosts]]\nname = "a"\ndevices = ["cpu"]\n\n[[hosts]]\nname = "b"\ndevices = ["cpu"]\n\n[partition]\nstages = 2\n' >>"$WORK/two.toml"
"$BRIGADE" plan "$WORK/two.toml" --out "$WORK/job.json" >/dev/null
"$BRIGADE" reference "$WORK/two.toml" --steps 20 --metrics "$WORK/ref.jsonl" >/dev/null
export BRIGADE_SECRET="slurm-test-secret-$$-0123456789"
cat >"$WORK/job.sh" <<JOBEOF
#!/bin/bash
srun --kill-on-bad-exit=1 "$BRIGADE" stage "$WORK/job.json" --run-id "\$SLURM_JOB_ID" --steps "\$STEPS" --rendezvous-port 29400
JOBEOF
chmod +x "$WORK/job.sh"

echo "slurm: sbatch --wait -c 2, two ranks on bn1 and bn2 through the rendezvous, under CURVE"
STEPS=20 sbatch --wait -N2 -n2 --ntasks-per-node=1 -c 2 -o "$WORK/job-%j.out" "$WORK/job.sh" >/dev/null \
  || { echo "FAIL: the job failed"; cat "$WORK"/job-*.out; exit 1; }
# Each task was given 2 cores: each rank says it computes on 2 threads.
n=$(grep -c 'compute thread(s) (SLURM_CPUS_PER_TASK=2)' "$WORK"/job-*.out || true)
[ "$n" = 2 ] || { echo "FAIL: $n of 2 ranks report 2 threads from SLURM_CPUS_PER_TASK"; cat "$WORK"/job-*.out; exit 1; }
echo "slurm: both ranks compute on the 2 cores their task was given"
python3 - "$WORK"/job-*.out "$WORK/ref.jsonl" <<'PY'
import json, sys
out, ref = sys.argv[1], sys.argv[2]
got = []
for line in open(out):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("event") == "step" and e.get("loss") is not None:
        got.append(e["loss"])
want = [m["loss"] for m in map(json.loads, open(ref)) if "loss" in m]
assert len(got) == len(want) == 20, (len(got), len(want))
for i, (a, b) in enumerate(zip(got, want)):
    assert abs(a - b) <= 1e-5 * abs(b), f"step {i + 1}: {a} vs reference {b}"
print("slurm: losses equal the reference at all 20 steps")
PY
rm -f "$WORK"/job-*.out

echo "slurm: killing rank 0 mid-run"
STEPS=1000000 sbatch --wait -N2 -n2 --ntasks-per-node=1 -o "$WORK/job-%j.out" "$WORK/job.sh" >/dev/null &
SB=$!
for _ in $(seq 1 300); do
  grep -q '"event":"step"' "$WORK"/job-*.out 2>/dev/null && break
  sleep 0.2
done
PID=$(pgrep -f -- "stage $WORK/job.json" | head -1 || true)
[ -n "$PID" ] || { echo "FAIL: no running rank"; cat "$WORK"/job-*.out; exit 1; }
KILLED=$(date +%s)
kill -KILL "$PID"
if wait "$SB"; then echo "FAIL: the job succeeded after a rank was killed"; exit 1; fi
ELAPSED=$(( $(date +%s) - KILLED ))
[ "$ELAPSED" -le 20 ] || { echo "FAIL: the job took $ELAPSED s to fail"; exit 1; }
sleep 1
if pgrep -f -- "stage $WORK/job.json" >/dev/null; then
  echo "FAIL: brigade processes left:"; pgrep -af -- "stage $WORK/job.json"; exit 1
fi
echo "slurm: the job FAILED $ELAPSED s after the kill, no brigade process left"
rm -f "$WORK"/job-*.out

# Restarts inside the allocation: every task is its rank's agent (--max-restarts); the agents
# meet in restart rounds at the rendezvous on bn1. A rank process killed mid-run makes every rank
# restart from the newest checkpoint; the job COMPLETES with the reference's losses.
echo "slurm: --max-restarts: a rank killed mid-run, every rank restarts, the job completes"
"$BRIGADE" reference "$WORK/two.toml" --steps 2000 --metrics "$WORK/ref2000.jsonl" >/dev/null
cat >"$WORK/job-restart.sh" <<JOBEOF
#!/bin/bash
srun --kill-on-bad-exit=1 "$BRIGADE" stage "$WORK/job.json" --run-id "\$SLURM_JOB_ID" --steps 2000 --rendezvous-port 29400 \\
  --max-restarts 2 --restart-backoff 0 --checkpoint-dir "$WORK/ck" --checkpoint-every 10 --metrics "$WORK/restart.jsonl"
JOBEOF
chmod +x "$WORK/job-restart.sh"
sbatch --wait -N2 -n2 --ntasks-per-node=1 -o "$WORK/job-%j.out" "$WORK/job-restart.sh" >/dev/null &
SB=$!
for _ in $(seq 1 300); do
  [ -d "$WORK/ck/step-00000050" ] && break
  sleep 0.1
done
# The rank processes (children of the agents) name the plan as --plan-source.
PID=$(pgrep -f -- "--plan-source $WORK/job.json" | head -1 || true)
[ -n "$PID" ] || { echo "FAIL: no running rank process"; cat "$WORK"/job-*.out; exit 1; }
kill -KILL "$PID"
wait "$SB" || { echo "FAIL: the job did not complete after a restart"; cat "$WORK"/job-*.out; exit 1; }
python3 - "$WORK/restart.jsonl" "$WORK/ref2000.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
got = [r["loss"] for r in rows if "loss" in r]
restarts = [r for r in rows if "restart" in r]
want = [m["loss"] for m in map(json.loads, open(sys.argv[2])) if "loss" in m]
assert len(restarts) == 1, restarts
assert len(got) == len(want) == 2000, (len(got), len(want))
for i, (a, b) in enumerate(zip(got, want)):
    assert abs(a - b) <= 1e-5 * abs(b), f"step {i + 1}: {a} vs reference {b}"
print(f"slurm: restarted from step {restarts[0]['step']}; losses equal the reference at all 2000 steps")
PY
sleep 1
if pgrep -f -- "$WORK/job.json" >/dev/null; then
  echo "FAIL: brigade processes left:"; pgrep -af -- "$WORK/job.json"; exit 1
fi
