#!/usr/bin/env bash
# Threads per rank: brigade against PyTorch on the same CPU work, 2 cores' worth, measured in one
# run, alternating engines round by round. Two workloads:
#   mlp    mlp-8x1024 (8 x [Linear 1024 + ReLU] + Linear 10, batch 256 in 8 micro-batches, SGD
#          lr 0.01): topologies/mlp-8x1024.toml and torch_pipe_bench.py's defaults
#   llama  llama_compare.sh's Llama (d 256 x 8 blocks, seq 128, batch 32 in 8 micro-batches,
#          AdamW), one transformers checkpoint written by make_llama_bench.py for both
# and, for each, seven configurations:
#   PyTorch  one process x 2 intra-op threads, the whole batch at once
#   PyTorch  one process x 2 threads, the 8 micro-batches with gradient accumulation
#   PyTorch  torch.distributed.pipelining GPipe, 2 stages x 1 thread (gloo, 127.0.0.1)
#   brigade  `brigade reference --threads 2` (the whole model on one rank of 2 threads)
#   brigade  the same on the whole batch at once (train.microbatches = 1), as PyTorch's first
#   brigade  `brigade train`, 2 stages x 1 thread, GPipe
#   brigade  the planner's pick: `brigade profile --threads 1,2` once, then `brigade plan` with
#            partition.threads = "auto" on a host of 2 threads, weighing 1 stage x 1 or 2
#            threads and 2 stages x 1 thread (the topology's stages left unsaid, so that it may
#            choose them), and `brigade train` of that job plan
# samples/s = batch / median step time of the steps after the first 3 (warm-up), both engines.
# Prints every run, the planner's shapes, the planner's predicted step against the measured one
# for each brigade configuration, and per workload a table (markdown, for docs/performance.md)
# of the median samples/s per configuration, the best PyTorch and the best brigade
# configuration, their ratio, and whether the planner's pick is brigade's best.
#
# usage: benches/torch/threads_compare.sh [ROUNDS]   (default $ROUNDS, else 3; run it on an
#        otherwise idle machine — it is written for, and assumes, 2 cores)
# STEPS (default 20) sets the steps of every run; WORKLOADS (default "mlp llama") picks them.
# PyTorch: $TORCH_PYTHON, else python3 — a Python with torch 2.15, transformers 5, pyarrow and
# numpy (benches/torch/requirements.txt; PyPI has only the CUDA build, 5+ GB, fine on CPU):
#   python3 -m venv ~/.venv-torch && ~/.venv-torch/bin/pip install -r benches/torch/requirements.txt
#   ~/.venv-torch/bin/pip install transformers pyarrow
#   TORCH_PYTHON=~/.venv-torch/bin/python benches/torch/threads_compare.sh
# brigade: $BRIGADE if set (then nothing is built), else `cargo build --release` and the cargo
# target directory's release/brigade; it must know threads per rank (`reference --threads`).
# Without torch it says SKIP and exits 0, or under CI=true says FAIL and exits 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-${ROUNDS:-3}}
STEPS=${STEPS:-20}
WORKLOADS=${WORKLOADS:-mlp llama}
WARMUP=3 # untimed steps at the start of every run, both engines
PY=${TORCH_PYTHON:-python3}
. engine/tests/skip.sh
if ! "$PY" -c 'import torch, transformers, pyarrow, numpy' 2>/dev/null; then
  skip_or_fail "torch threads comparison" "torch, transformers, pyarrow or numpy in $PY" \
    "install them (see the top of $0) and set TORCH_PYTHON"
fi
if [ "$STEPS" -le "$WARMUP" ]; then
  echo "STEPS must be more than the $WARMUP warm-up steps" >&2
  exit 1
fi
if [ -z "${BRIGADE:-}" ]; then
  cargo build --release -q -p brigade-engine
  BRIGADE=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/brigade
fi
if ! "$BRIGADE" reference --help 2>/dev/null | grep -q -- '--threads'; then
  echo "$BRIGADE has no threads per rank (reference --threads); build a newer one" >&2
  exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The planner's machine: one host of 2 compute threads with 2 CPU devices (one rank each).
HOSTS='hosts=[{name="local",address="127.0.0.1",threads=2,devices=["cpu","cpu"]}]'
RUNS=$WORK/runs.tsv # workload, config, round, samples/s, step ms, first loss, last loss, load
PRED=$WORK/pred.tsv # workload, config, predicted step ms
PICK=$WORK/pick.tsv # workload, the planner's shape
: >"$RUNS"
: >"$PRED"
: >"$PICK"

# --- one run of each engine: prints "samples/s step_ms first_loss final_loss load" ----------
torch_run() { # workload, bench args...
  local wl=$1
  shift
  local cmd
  case "$wl" in
    mlp) cmd=(benches/torch/torch_pipe_bench.py) ;;
    llama) cmd=(benches/torch/torch_llama_pipe_bench.py "$WORK/llama") ;;
  esac
  if ! "$PY" "${cmd[@]}" --steps "$STEPS" --warmup "$WARMUP" "$@" >"$WORK/torch.out" \
    2>"$WORK/torch.log"; then
    echo "torch run failed ($wl $*):" >&2
    tail -20 "$WORK/torch.log" >&2
    return 1
  fi
  # the last JSON line; ms_per_step_median (mlp) or ms_per_step (llama: the median)
  grep '^{' "$WORK/torch.out" | tail -1 | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
ms = d.get("ms_per_step_median", d["ms_per_step"])
print("%.2f %.2f %.6f %.6f %s" % (d["batch"] / ms * 1e3, ms, d["losses"][0], d["final_loss"],
                                  d["loadavg_1m_at_end"]))'
}

brigade_run() { # batch, brigade args... (--steps and --metrics are added)
  local batch=$1
  shift
  rm -f "$WORK/m.jsonl"
  if ! "$BRIGADE" "$@" --steps "$STEPS" --metrics "$WORK/m.jsonl" >"$WORK/brigade.log" 2>&1; then
    echo "brigade run failed ($*):" >&2
    tail -20 "$WORK/brigade.log" >&2
    return 1
  fi
  python3 - "$WORK/m.jsonl" "$batch" "$WARMUP" <<'PY'
import json, os, statistics, sys
rows = [r for r in map(json.loads, filter(str.strip, open(sys.argv[1])))
        if "loss" in r and "step_ms" in r]
timed = rows[int(sys.argv[3]):]
ms = statistics.median(r["step_ms"] for r in timed)
print(f"{int(sys.argv[2]) / ms * 1e3:.2f} {ms:.2f} {rows[0]['loss']:.6f} {rows[-1]['loss']:.6f}",
      f"{os.getloadavg()[0]:.2f}")
PY
}

# --- the workloads ------------------------------------------------------------------------
# TOPO: the topology brigade trains (2 stages; the Llama cut by hand as torch's);
# AUTO: the same without [partition] stages / method = "manual" / balance, for the planner.
setup() { # workload -> sets TOPO AUTO BATCH
  local wl=$1
  mkdir -p "$WORK/$wl"
  case "$wl" in
    mlp)
      TOPO=topologies/mlp-8x1024.toml
      BATCH=256
      ;;
    llama)
      # enough rows that no run wraps around the file
      "$PY" benches/torch/make_llama_bench.py "$WORK/llama" --steps $((STEPS + 8)) >/dev/null \
        2>"$WORK/make.log" || { cat "$WORK/make.log" >&2; return 1; }
      TOPO=$WORK/llama/llama-bench.toml # its parquet and checkpoint paths are relative to it
      BATCH=32
      ;;
    *)
      echo "unknown workload $wl (mlp, llama)" >&2
      return 1
      ;;
  esac
  AUTO=$WORK/$wl/$(basename "$TOPO" .toml)-auto.toml # next to the Llama's data and checkpoint
  grep -v -E '^[[:space:]]*(stages|balance)[[:space:]]*=|^[[:space:]]*method[[:space:]]*=[[:space:]]*"manual"' \
    "$TOPO" >"$AUTO" || true
}

plan_step_ms() { # plan args... -> the simulated step (ms) of `brigade plan --json`
  if ! "$BRIGADE" plan "$@" --json >"$WORK/plan.json" 2>"$WORK/plan.log"; then
    echo "brigade plan failed ($*):" >&2
    tail -20 "$WORK/plan.log" >&2
    return 1
  fi
  python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["step_ms"])' "$WORK/plan.json"
}

plan_workload() { # workload: profile, the planner's pick (job plan WORK/wl-auto.json), predictions
  local wl=$1 profile=$WORK/$wl/profile.json
  echo "$wl: brigade profile --threads 1,2 (not timed)"
  if ! "$BRIGADE" profile "$AUTO" --threads 1,2 --out "$profile" >"$WORK/profile.log" 2>&1; then
    tail -20 "$WORK/profile.log" >&2
    return 1
  fi
  grep -E '^[0-9]+ threads:' "$WORK/profile.log" | sed 's/^/  /' || true
  # the pick, with the table of shapes weighed as `brigade plan` prints it
  "$BRIGADE" plan "$AUTO" --profile "$profile" --set partition.threads=auto --set "$HOSTS" \
    >"$WORK/plan.txt" 2>&1 || { tail -20 "$WORK/plan.txt" >&2; return 1; }
  awk '/^shapes weighed/ {on = 1} on && (/^$/ || /^data:/ || /^schedules on/) {exit} on' \
    "$WORK/plan.txt" | sed 's/^/  /'
  local auto_ms
  auto_ms=$(plan_step_ms "$AUTO" --profile "$profile" --set partition.threads=auto \
    --set "$HOSTS" --out "$WORK/$wl-auto.json")
  python3 - "$WORK/plan.json" "$wl" >>"$PICK" <<'PY'
import json, sys
shapes = json.load(open(sys.argv[1])).get("shapes", [])
c = next((s for s in shapes if s.get("chosen")), None)
if c is None:
    print(f"{sys.argv[2]}\t?")
else:
    t = c.get("threads") or 1
    r = f"{c['replicas']} replicas × " if c["replicas"] > 1 else ""
    print(f"{sys.argv[2]}\t{r}{c['stages']} stage{'s' * (c['stages'] > 1)} × {t} thread{'s' * (t > 1)}")
PY
  # what the planner predicts for the two fixed shapes brigade runs
  local ref_ms two_ms
  ref_ms=$(plan_step_ms "$AUTO" --profile "$profile" --set "$HOSTS" --set partition.stages=1 \
    --set partition.threads=2)
  two_ms=$(plan_step_ms "$TOPO" --profile "$profile" --set "$HOSTS" --set partition.stages=2 \
    --set partition.threads=1 --set train.schedule=gpipe)
  printf '%s\t%s\t%s\n' "$wl" brigade_auto "$auto_ms" "$wl" brigade_ref "$ref_ms" \
    "$wl" brigade_2x1 "$two_ms" >>"$PRED"
  echo "  planner's step: pick $auto_ms ms, 1 stage × 2 threads $ref_ms ms, 2 stages × 1 thread $two_ms ms"
}

run_config() { # workload, config -> "samples/s step_ms first final load"
  case "$1:$2" in
    mlp:torch_1x2) torch_run mlp --single --single-threads 2 ;;
    mlp:torch_1x2_accum) torch_run mlp --single --single-accum --single-threads 2 ;;
    mlp:torch_2x1) torch_run mlp --schedule gpipe --pipe-threads 1 ;;
    llama:torch_1x2) torch_run llama --single --threads 2 ;;
    llama:torch_1x2_accum) torch_run llama --single --single-accum --threads 2 ;;
    llama:torch_2x1) torch_run llama --schedule gpipe --threads 1 --no-check ;;
    *:brigade_ref) brigade_run "$BATCH" reference "$TOPO" --threads 2 ;;
    *:brigade_ref_whole)
      brigade_run "$BATCH" reference "$TOPO" --threads 2 --set train.microbatches=1
      ;;
    *:brigade_2x1)
      brigade_run "$BATCH" train "$TOPO" --set partition.stages=2 --set partition.threads=1 \
        --set train.schedule=gpipe
      ;;
    *:brigade_auto) brigade_run "$BATCH" train "$WORK/$1-auto.json" ;;
  esac
}

# torch and brigade alternate; every other round runs the list backwards (drift cancels)
ORDER=(torch_1x2 brigade_ref torch_1x2_accum brigade_2x1 torch_2x1 brigade_auto brigade_ref_whole)
echo "threads per rank, brigade against PyTorch: $(nproc) cores ($(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1))," \
  "$ROUNDS rounds of $STEPS steps (first $WARMUP untimed), $(date -u '+%Y-%m-%d %H:%M UTC')"
for wl in $WORKLOADS; do
  setup "$wl"
  plan_workload "$wl"
  echo "$wl: $ROUNDS rounds (samples/s, median step ms, loss first -> last, load at end)"
  for r in $(seq 1 "$ROUNDS"); do
    order=("${ORDER[@]}")
    if [ $((r % 2)) -eq 0 ]; then
      order=()
      for ((i = ${#ORDER[@]} - 1; i >= 0; i--)); do order+=("${ORDER[i]}"); done
    fi
    for cfg in "${order[@]}"; do
      out=$(run_config "$wl" "$cfg") # a failed run stops the script (set -e)
      read -r sps ms l0 l1 load <<<"$out"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$wl" "$cfg" "$r" "$sps" "$ms" "$l0" "$l1" "$load" >>"$RUNS"
      printf '  round %s %-16s %9s samples/s %9s ms  loss %s -> %s  load %s\n' \
        "$r" "$cfg" "$sps" "$ms" "$l0" "$l1" "$load"
    done
  done
done

# --- the tables -----------------------------------------------------------------------------
TORCH_VERSION=$("$PY" -c 'import torch; print(torch.__version__)') \
  BRIGADE_VERSION=$("$BRIGADE" --version 2>/dev/null || echo brigade) \
  CPU_MODEL=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1) \
  NPROC=$(nproc) ROUNDS=$ROUNDS STEPS=$STEPS WARMUP=$WARMUP \
  python3 - "$RUNS" "$PRED" "$PICK" <<'PY'
import csv, datetime, os, statistics, sys

runs, pred, pick = ({}, {}, {})
for wl, cfg, r, sps, ms, l0, l1, load in csv.reader(open(sys.argv[1]), delimiter="\t"):
    runs.setdefault(wl, {}).setdefault(cfg, []).append((float(sps), float(ms)))
for wl, cfg, ms in csv.reader(open(sys.argv[2]), delimiter="\t"):
    pred[(wl, cfg)] = float(ms)
for wl, shape in csv.reader(open(sys.argv[3]), delimiter="\t"):
    pick[wl] = shape

TITLES = {
    "mlp": "mlp-8x1024: 8 × [linear 1024 + relu] + linear 10, batch 256 in 8 micro-batches, SGD",
    "llama": "Llama d256 × 8 blocks (transformers checkpoint), seq 128, batch 32 in 8 "
             "micro-batches, AdamW",
}
LABELS = {
    "torch_1x2": "PyTorch, 1 process × 2 threads, whole batch",
    "torch_1x2_accum": "PyTorch, 1 process × 2 threads, 8 micro-batches accumulated",
    "torch_2x1": "PyTorch pipelining (GPipe), 2 stages × 1 thread",
    "brigade_ref": "brigade reference --threads 2",
    "brigade_ref_whole": "brigade reference --threads 2, whole batch (train.microbatches = 1)",
    "brigade_2x1": "brigade train (GPipe), 2 stages × 1 thread",
    "brigade_auto": "brigade train, planner's pick",
}
env = os.environ
print()
print(f"threads per rank, brigade against PyTorch — {env['NPROC']} cores ({env['CPU_MODEL']}), "
      f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}, torch {env['TORCH_VERSION']}, "
      f"{env['BRIGADE_VERSION']}; {env['ROUNDS']} alternating rounds of {env['STEPS']} steps, "
      f"samples/s = batch / median step after {env['WARMUP']} warm-up steps")
for wl, cfgs in runs.items():
    print(f"\n{TITLES.get(wl, wl)}\n")
    print("| configuration | samples/s per round | median samples/s | step ms | planner's step ms |")
    print("|---|---|---:|---:|---:|")
    med = {}
    for cfg in LABELS:
        if cfg not in cfgs:
            continue
        sps = [s for s, _ in cfgs[cfg]]
        ms = statistics.median(m for _, m in cfgs[cfg])
        med[cfg] = statistics.median(sps)
        label = LABELS[cfg]
        if cfg == "brigade_auto":
            label += f" ({pick.get(wl, '?')})"
        p = pred.get((wl, cfg))
        pcol = f"{p:.1f} ({p / ms:.2f}×)" if p is not None else ""
        print(f"| {label} | {' '.join(f'{s:.1f}' for s in sps)} | {med[cfg]:.1f} | {ms:.1f} | {pcol} |")
    torch_best = max((c for c in med if c.startswith("torch")), key=med.get)
    brig_best = max((c for c in med if c.startswith("brigade")), key=med.get)
    print(f"\nbest PyTorch: {LABELS[torch_best]}, {med[torch_best]:.1f} samples/s; "
          f"best brigade: {LABELS[brig_best]}, {med[brig_best]:.1f} samples/s; "
          f"brigade / PyTorch = {med[brig_best] / med[torch_best]:.2f}")
    if "brigade_auto" in med:
        a = med["brigade_auto"] / med[brig_best]
        if a >= 1.0:
            verdict = "is brigade's best"
        elif a >= 0.97:
            verdict = f"is within 3% of brigade's best ({a:.2f}×; run-to-run noise)"
        else:
            verdict = f"is not brigade's best: {a:.2f}× of {LABELS[brig_best]}"
        print(f"planner's pick ({pick.get(wl, '?')}, simulated {pred.get((wl, 'brigade_auto'), float('nan')):.1f} ms): "
              f"{med['brigade_auto']:.1f} samples/s, {verdict}")
print("\n(planner's step ms: `brigade plan --profile` with the measured profile; in brackets "
      "predicted / measured)")
PY
