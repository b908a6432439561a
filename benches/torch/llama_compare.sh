#!/usr/bin/env bash
# brigade against PyTorch's own pipelining (torch.distributed.pipelining, gloo) on the same
# Llama, measured in one run, alternating: a random-init transformers LlamaForCausalLM (d 256,
# 8 decoder layers, 8 heads / 4 kv heads, SwiGLU 688, vocab 512, untied), 128 tokens per sample,
# batch 32 in 8 micro-batches, AdamW, f32, 2 CPU stages x 1 compute thread cut as
# embedding + 4 blocks | 4 blocks + norm + head, GPipe and 1F1B. Both train the same checkpoint
# on the same Parquet rows in the same order (benches/torch/make_llama_bench.py writes them and
# brigade's topology). Prints each run's samples/s (median step after 3 warm-up steps) and first
# loss, and per schedule the median ratio brigade / torch (goal: >= 1).
#
# usage: benches/torch/llama_compare.sh [ROUNDS]   (default 3; run it on an otherwise idle machine)
# PyTorch: $TORCH_PYTHON, else python3 — a Python with torch 2.15, transformers 5, pyarrow and
# numpy (see the top of benches/torch/compare.sh; add `pip install transformers pyarrow`).
# brigade: $BRIGADE if set (then nothing is built), else `cargo build --release` and the cargo
# target directory's release/brigade. STEPS (default 20) sets the steps of every run.
# Without torch it says SKIP and exits 0, or under CI=true says FAIL and exits 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
STEPS=${STEPS:-20}
PY=${TORCH_PYTHON:-python3}
. engine/tests/skip.sh
if ! "$PY" -c 'import torch, transformers, pyarrow, numpy' 2>/dev/null; then
  skip_or_fail "torch Llama comparison" "torch, transformers, pyarrow or numpy in $PY" \
    "install them (see the top of $0) and set TORCH_PYTHON"
fi
if [ -z "${BRIGADE:-}" ]; then
  cargo build --release -q -p brigade-engine
  BRIGADE=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/brigade
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# enough rows that no run wraps around the file
"$PY" benches/torch/make_llama_bench.py "$WORK" --steps $((STEPS + 8)) >/dev/null 2>"$WORK/make.log" ||
  { cat "$WORK/make.log" >&2; exit 1; }

brigade_run() { # schedule -> "samples/s first_loss final_loss load"
  if ! "$BRIGADE" train "$WORK/llama-bench.toml" --set "train.schedule=$1" --steps "$STEPS" \
    --metrics "$WORK/m.jsonl" >"$WORK/brigade.log" 2>&1; then
    echo "brigade train failed ($1):" >&2
    tail -20 "$WORK/brigade.log" >&2
    return 1
  fi
  python3 - "$WORK/m.jsonl" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
timed = rows[3:]
print(f"{32 / statistics.median(r['step_ms'] for r in timed) * 1e3:.2f}",
      f"{rows[0]['loss']:.7f}", f"{rows[-1]['loss']:.7f}", f"{os.getloadavg()[0]:.2f}")
PY
}

torch_run() { # schedule -> "samples/s first_loss final_loss load reference_first_loss"
  if ! "$PY" benches/torch/torch_llama_pipe_bench.py "$WORK" --schedule "$1" --steps "$STEPS" \
    >"$WORK/torch.out" 2>"$WORK/torch.log"; then
    echo "torch run failed ($1):" >&2
    tail -20 "$WORK/torch.log" >&2
    return 1
  fi
  tail -1 "$WORK/torch.out" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
print("%.2f %.7f %.7f %s %.7f" % (d["samples_per_sec"], d["first_loss"], d["final_loss"],
                                  d["loadavg_1m_at_end"], d["reference_first_loss"]))'
}

med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "llama d256 x 8 blocks, seq 128, batch 32 in 8 micro-batches, AdamW, 2 stages x 1 thread" \
  "($(nproc) cores, $ROUNDS rounds of $STEPS steps)"
for schedule in gpipe 1f1b; do
  ratios=()
  for r in $(seq 1 "$ROUNDS"); do
    read -r t tl0 tl1 tload ref < <(torch_run "$schedule")
    read -r b bl0 bl1 bload < <(brigade_run "$schedule")
    ratios+=("$(python3 -c "print(f'{$b / $t:.2f}')")")
    d0=$(python3 -c "print(f'{abs($bl0 - $tl0) / $tl0:.1e}')")
    echo "  $schedule round $r: torch $t samples/s (load $tload), brigade $b (load $bload);" \
      "loss step 1: torch $tl0, brigade $bl0 (relative difference $d0; one process of" \
      "transformers: $ref), step $STEPS: torch $tl1, brigade $bl1"
  done
  echo "$schedule: median ratio brigade / torch $(med "${ratios[@]}")"
done
