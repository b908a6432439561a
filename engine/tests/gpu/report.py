"""Figures of one GPU check run (engine/tests/gpu/run.sh): losses against the reference,
step times, efficiency, the trace's compute/transfer split and GPU memory per rank.
Exits 1 when the pipelined losses stray from the reference's beyond the stated tolerance."""
import json
import statistics
import sys
from collections import defaultdict

work, name = sys.argv[1], sys.argv[2]
# f32: the same kernels in both runs, but cubecl's autotune times candidates in each process
# and may pick a different matmul tiling (another summation order). bf16 rounds every
# activation to 8 bits of mantissa, so the same reorderings show at bf16's epsilon.
TOLERANCE = 1e-2 if "bf16" in name or "f16" in name else 1e-4
WARMUP = 3  # first steps compile and autotune kernels


def jsonl(path):
    with open(path) as f:
        # Step lines only (evaluation lines carry val_loss instead).
        return [m for m in (json.loads(l) for l in f if l.strip()) if "loss" in m]


ref, train = jsonl(f"{work}/{name}-ref.jsonl"), jsonl(f"{work}/{name}-train.jsonl")
worst = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(train, ref))
exact = sum(a["loss"] == b["loss"] for a, b in zip(train, ref))
print(f"losses: {len(train)} steps, {exact} bit-identical, max relative difference {worst:.3e} "
      f"(tolerance {TOLERANCE:g}); first {ref[0]['loss']:.6f} last {ref[-1]['loss']:.6f}")


def steady(ms):
    return statistics.median(ms[WARMUP:] if len(ms) > WARMUP + 2 else ms)


ref_ms = steady([m["step_ms"] for m in ref])
train_ms = steady([m["step_ms"] for m in train])
batch = ref[0]["samples_per_sec"] * ref[0]["step_ms"] / 1e3
print(f"step (median after {WARMUP}): reference {ref_ms:.2f} ms, 2-rank pipeline {train_ms:.2f} ms "
      f"({batch / train_ms * 1e3:,.0f} samples/s)")

sim = json.load(open(f"{work}/{name}-sim.json"))
print(f"simulated on this GPU's profile (brigade profile + simulate): {sim['step_ms']:.2f} ms "
      f"(ideal {sim['ideal_step_ms']:.2f} ms); efficiency {sim['step_ms'] / train_ms:.2f} of the simulated step; "
      f"pipeline speed-up over the one-process reference {ref_ms / train_ms:.2f}x")

trace = json.load(open(f"{work}/{name}-trace.json"))
events = trace["traceEvents"] if isinstance(trace, dict) else trace
by = defaultdict(float)
steps = len(train)
for e in events:
    if e.get("ph") == "X":
        by[(e["pid"], e["name"])] += e["dur"] / 1e3 / steps
for rank in sorted({p for p, _ in by}):
    compute = sum(by[(rank, n)] for n in ("forward", "backward", "optimizer"))
    transfer = sum(by[(rank, n)] for n in ("readback", "upload", "send"))
    parts = ", ".join(f"{n} {by[(rank, n)]:.2f}" for n in
                      ("forward", "backward", "optimizer", "recv", "readback", "upload", "send")
                      if (rank, n) in by)
    print(f"rank {rank} per step (ms): {parts}; compute thread busy {compute:.2f}, "
          f"I/O thread transfers {transfer:.2f} ({transfer / train_ms:.1%} of the step, beside compute)")

peak = defaultdict(int)
try:
    for line in open(f"{work}/{name}-mem.txt"):
        *who, mib = line.split()
        peak[" ".join(who)] = max(peak[" ".join(who)], int(mib))
except FileNotFoundError:
    pass
if any(w.startswith("rank") for w in peak):
    # A sample whose process table read raced the process shows only its pid.
    peak = {w: m for w, m in peak.items() if w.startswith("rank")}
print("GPU memory (peak, MiB): " + (", ".join(f"{w} {m}" for w, m in sorted(peak.items())) or "not sampled"))
sys.exit(0 if worst <= TOLERANCE else 1)
