#!/usr/bin/env bash
# brigade against PyTorch eager on one GPU, in one run, alternating (issue 27, docs/gpu.md).
# Builds nothing: takes a brigade built with `--features cuda` (../shared/gpu/build-cuda.sh).
#
# Rows (each case: PyTorch eager, brigade `reference`, brigade 2-rank `train` with both ranks on
# cuda:0; mlp f32, the Llama, mlp bf16, then the interleaved check and kernel profiles), then a
# second PyTorch/reference pair of the MLP cases if time is left, so drift of the machine shows:
#   mlp-8x1024, batch 4096 in 8 micro-batches, SGD, f32 and bf16
#   Llama (transformers' LlamaForCausalLM, random init, written by make_llama_bench.py and
#   loaded by both): vocab 32000, d 2048, ff 5504, 16 blocks, 16 heads / 8 kv heads,
#   seq 2048, batch 4 sequences in 4 micro-batches, AdamW, bf16 (BRIGADE_LLAMA_SIZE overrides)
# It prints per row: step time, samples or tokens per second, TFLOP/s, MFU against 989 TFLOP/s
# (H200 dense bf16), the ratio to PyTorch, peak GPU memory (nvidia-smi, all the run's
# processes) and whether the pipelined losses equal the reference's (summarize.py), and writes
# the rows as JSON lines to $BRIGADE_BENCH_OUT (default benches/results/gpu-side-by-side.jsonl).
#
# usage: benches/gpu/side_by_side.sh [brigade or brigade.gz]   (default target/gpu-carry/brigade.gz)
# BRIGADE_CHECK_DEVICE=cpu: the same rows on the CPU at small sizes (to try the script without
# a GPU; needs python3 with torch, transformers, pyarrow). BRIGADE_BENCH_BUDGET: seconds after
# which optional rows are skipped (default 420); BRIGADE_BENCH_DEADLINE: seconds by which every
# run is stopped so the summary still prints (default 540). BRIGADE_BENCH_KEEP=FILE.tar.gz keeps the
# metrics, logs and memory samples. Autotune's cache: target/environment under the
# checkout (cubecl's default), shared by the run's processes; the first steps of each run
# (WARMUP) are not timed.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/gpu-carry/brigade.gz}
DEVICE=${BRIGADE_CHECK_DEVICE:-cuda:0}
BUDGET=${BRIGADE_BENCH_BUDGET:-420}
DEADLINE=${BRIGADE_BENCH_DEADLINE:-540}
RESULTS=${BRIGADE_BENCH_OUT:-benches/results/gpu-side-by-side.jsonl}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
SAMPLER=
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  pkill -KILL -f "$WORK/" 2>/dev/null
  [ -n "${BRIGADE_BENCH_KEEP:-}" ] &&
    tar czf "$BRIGADE_BENCH_KEEP" -C "$WORK" --exclude=./llama --exclude=./brigade --exclude=./environment .
  rm -rf "$WORK"
}
trap cleanup EXIT
if [[ "$BIN" == *.gz ]]; then gunzip -c "$BIN" > "$WORK/brigade"; else cp "$BIN" "$WORK/brigade"; fi
chmod +x "$WORK/brigade"
B="$WORK/brigade"
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
export LD_LIBRARY_PATH="$CUDA_PATH/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1

if [ "$DEVICE" = cpu ]; then
  MLP_BATCH=256 MLP_STEPS=6 DTYPES=f32 TORCH_DEVICE=cpu
  LLAMA_SIZE=${BRIGADE_LLAMA_SIZE:-vocab=512,d=128,ff=344,layers=2,heads=4,kv_heads=2,seq=64,batch=4,microbatches=2}
else
  MLP_BATCH=4096 MLP_STEPS=12 DTYPES="f32 bf16" TORCH_DEVICE=cuda
  LLAMA_SIZE=${BRIGADE_LLAMA_SIZE:-vocab=32000,d=2048,ff=5504,layers=16,heads=16,kv_heads=8,seq=2048,batch=4,microbatches=4}
  echo "== GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
fi
echo "== brigade $("$B" --version), $($PY -c 'import torch; print("torch", torch.__version__)')"

# Seconds a command may run: at most $1, and never past the deadline (the summary needs ~10 s).
limit() {
  local left=$((DEADLINE - SECONDS - 10))
  [ $left -lt 5 ] && left=5
  echo $(($1 < left ? $1 : left))
}

# Peak GPU memory (MiB) of all compute processes together, every 200 ms.
sample_memory() {
  [ "$DEVICE" = cpu ] && return
  while true; do
    nvidia-smi --query-compute-apps=used_memory --format=csv,noheader,nounits 2>/dev/null |
      awk '{s += $1} END {print s + 0}'
    sleep 0.2
  done > "$1"
}
watch_memory() { sample_memory "$WORK/$1-mem.txt" & SAMPLER=$!; }
stop_memory() { [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; SAMPLER=; }

# brigade_row CASE KIND TOPOLOGY SETS... : KIND ref or train; metrics to $WORK/CASE-KIND.jsonl.
brigade_row() {
  local case=$1 kind=$2 topo=$3; shift 3
  local sets=() s cmd
  for s in "$@"; do sets+=(--set "$s"); done
  if [ "$kind" = ref ]; then cmd=(reference "$topo" --device "$DEVICE"); else cmd=(train "$topo" --peer-timeout 600); fi
  watch_memory "$case-$kind"
  timeout "$(limit 240)" "$B" "${cmd[@]}" "${sets[@]}" --metrics "$WORK/$case-$kind.jsonl" > "$WORK/$case-$kind.log" 2>&1
  local rc=$?
  stop_memory
  [ $rc = 0 ] || { echo "!! $case brigade $kind failed (exit $rc):"; tail -20 "$WORK/$case-$kind.log"; }
  echo "   $case brigade $kind done [${SECONDS}s]"
}
torch_row() {
  local case=$1; shift
  watch_memory "$case-torch"
  timeout "$(limit 240)" $PY benches/gpu/torch_peer.py "$@" --device "$TORCH_DEVICE" > "$WORK/$case-torch.json" 2> "$WORK/$case-torch.log"
  local rc=$?
  stop_memory
  [ $rc = 0 ] || { echo "!! $case torch failed (exit $rc):"; tail -20 "$WORK/$case-torch.log"; }
  echo "   $case torch done [${SECONDS}s]"
}

sed "s/\"cpu\"/\"$DEVICE\"/g" topologies/mlp-8x1024.toml > "$WORK/mlp.toml"
mlp_case() {
  local dtype=$1 round=${2:-}
  local case="mlp-$dtype$round" sets=(train.batch=$MLP_BATCH train.microbatches=8 train.steps=$MLP_STEPS)
  [ "$dtype" = bf16 ] && sets+=('train.dtype="bf16"')
  echo "== $case [${SECONDS}s]"
  torch_row "$case" mlp --dtype "$dtype" --batch $MLP_BATCH --microbatches 8 --steps $((MLP_STEPS - 3)) --warmup 3
  brigade_row "$case" ref "$WORK/mlp.toml" "${sets[@]}"
  [ -n "$round" ] || brigade_row "$case" train "$WORK/mlp.toml" "${sets[@]}"
}

llama_case() {
  echo "== llama ($LLAMA_SIZE) [${SECONDS}s]"
  timeout "$(limit 180)" $PY benches/torch/make_llama_bench.py "$WORK/llama" --steps 8 --size "$LLAMA_SIZE" \
    --device "$TORCH_DEVICE" > "$WORK/llama-make.log" 2>&1 || { cat "$WORK/llama-make.log"; return; }
  sed -i "s/\"cpu\"/\"$DEVICE\"/g" "$WORK/llama/llama-bench.toml"
  cp "$WORK/llama/hf/config.json" "$WORK/llama-config.json"
  cp "$WORK/llama/llama-bench.toml" "$WORK/llama-topology.txt"
  local sets=(train.steps=6 train.schedule=1f1b)
  [ "$DEVICE" = cpu ] || sets+=('train.dtype="bf16"')
  torch_row llama llama "$WORK/llama" --steps 4 --warmup 2 --dtype "$([ "$DEVICE" = cpu ] && echo f32 || echo bf16)"
  brigade_row llama ref "$WORK/llama/llama-bench.toml" "${sets[@]}"
  if [ $SECONDS -lt "$BUDGET" ]; then
    brigade_row llama train "$WORK/llama/llama-bench.toml" "${sets[@]}"
  else
    echo "   llama brigade train skipped: past the ${BUDGET}s budget"
  fi
}

# Interleaved 1F1B (refused on CUDA until shown exact, docs/gpu.md): the quickstart over 2
# ranks in 4 chunks against `reference`, run past the refusal; prints how many step losses match.
interleaved_case() {
  echo "== quickstart interleaved-1f1b on $DEVICE [${SECONDS}s]"
  sed "s/\"cpu\"/\"$DEVICE\"/g; s|\"\.\./data/|\"$PWD/data/|" topologies/quickstart.toml > "$WORK/quickstart.toml"
  local sets=(--set train.steps=50)
  timeout "$(limit 120)" "$B" reference "$WORK/quickstart.toml" --device "$DEVICE" "${sets[@]}" \
    --metrics "$WORK/interleaved-ref.jsonl" > "$WORK/interleaved-ref.log" 2>&1 || tail -5 "$WORK/interleaved-ref.log"
  for run in 1 2; do
    BRIGADE_CUDA_TRY_INEXACT_SCHEDULE=1 timeout "$(limit 120)" "$B" train "$WORK/quickstart.toml" "${sets[@]}" \
      --set train.schedule=interleaved-1f1b --peer-timeout 30 --metrics "$WORK/interleaved-$run.jsonl" \
      > "$WORK/interleaved-$run.log" 2>&1 || tail -5 "$WORK/interleaved-$run.log"
    $PY - "$WORK/interleaved-ref.jsonl" "$WORK/interleaved-$run.jsonl" <<'PY'
import json, sys
ref, got = ([m for m in map(json.loads, open(p)) if "loss" in m] for p in sys.argv[1:])
same = sum(a["loss"] == b["loss"] for a, b in zip(ref, got))
first = next((i for i, (a, b) in enumerate(zip(ref, got)) if a["loss"] != b["loss"]), None)
worst = max((abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ref, got)), default=float("nan"))
print(f"   interleaved-1f1b vs reference: {len(got)}/{len(ref)} steps, {same} bit-identical, "
      f"first difference at step {first}, max rel diff {worst:.2e}")
PY
  done
}

# kernel_profile CASE TOPOLOGY STEPS SETS...: `reference` with cubecl timing every kernel on
# the device (after the timed rows: the autotune cache is warm), grouped by kernels.py.
kernel_profile() {
  local case=$1 topo=$2 steps=$3; shift 3
  local sets=() s
  for s in "$@"; do sets+=(--set "$s"); done
  [ "$DEVICE" = cpu ] && return
  echo "== kernel times: $case, $steps steps [${SECONDS}s]"
  CUBECL_DEBUG_LOG="$WORK/$case-kernels.txt" CUBECL_DEBUG_OPTION=profile timeout "$(limit 90)" \
    "$B" reference "$topo" --device "$DEVICE" "${sets[@]}" --set train.steps=$steps \
    > "$WORK/$case-kernels.log" 2>&1 || tail -3 "$WORK/$case-kernels.log"
  $PY benches/gpu/kernels.py "$WORK/$case-kernels.txt" "$steps"
  gzip -f "$WORK/$case-kernels.txt"
}

# The first process on a machine pays cubecl's device probes and autotune (minutes; kept on
# disk since): mlp f32 goes first, then the rows issue 27 is judged on.
mlp_case f32
llama_case
for dtype in $DTYPES; do [ "$dtype" = f32 ] || mlp_case "$dtype"; done
interleaved_case
kernel_profile mlp-bf16 "$WORK/mlp.toml" 4 train.batch=$MLP_BATCH train.microbatches=8 'train.dtype="bf16"'
[ $SECONDS -lt "$BUDGET" ] && kernel_profile llama "$WORK/llama/llama-bench.toml" 3 'train.dtype="bf16"'
for dtype in $DTYPES; do
  [ $SECONDS -lt "$BUDGET" ] && mlp_case "$dtype" -again
done
echo "== summary [${SECONDS}s]"
mkdir -p "$(dirname "$RESULTS")"
$PY benches/gpu/summarize.py "$WORK" --device "$DEVICE" --jsonl "$RESULTS"
