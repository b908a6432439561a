#!/usr/bin/env python3
"""The rows of one benches/gpu/side_by_side.sh run: a table on stdout, JSON lines appended to
--jsonl. Exits 1 when a pipelined run's losses stray from its reference's beyond the tolerance.

usage: summarize.py WORK --device cuda:0 --jsonl benches/results/gpu-side-by-side.jsonl

FLOPs counted per step (the usual model-FLOPs convention: forward + backward = 3 x forward,
matrix products only, no recomputation):
  mlp-8x1024: 6 x 8,398,848 weights x samples;
  Llama: tokens x (6 x N + 12 x layers x d x seq), N = the matrix weights of the blocks and the
  output head (not the embedding table), the second term attention's two products over the
  full (not causally halved) seq x seq scores (PaLM's MFU formula).
MFU is against the H200's 989 TFLOP/s dense bf16 peak, for f32 rows too.
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import tomllib

PEAK_TFLOPS = 989.0
MLP_WEIGHTS = 8 * 1024 * 1024 + 1024 * 10
CASES = ["mlp-f32", "mlp-bf16", "llama", "mlp-f32-again", "mlp-bf16-again"]


def jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [m for m in (json.loads(line) for line in f if line.strip()) if "loss" in m]


def peak_mib(work, case, kind):
    try:
        with open(f"{work}/{case}-{kind}-mem.txt") as f:
            values = [int(v) for v in f.read().split() if v.isdigit()]
        return max(values) if values else None
    except FileNotFoundError:
        return None


def llama_shape(work):
    with open(f"{work}/llama-config.json") as f:
        c = json.load(f)
    with open(f"{work}/llama-topology.txt", "rb") as f:
        t = tomllib.load(f)
    d, ff, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    hd = d // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd
    n = layers * (2 * d * d + 2 * d * kv + 3 * d * ff) + d * c["vocab_size"]
    seq, batch = t["model"]["seq"], t["train"]["batch"]
    per_token = 6 * n + 12 * layers * d * seq
    return {"batch": batch, "tokens": batch * seq, "flops": batch * seq * per_token,
            "warmup": 2, "size": f"d {d}, ff {ff}, {layers} blocks, {c['num_attention_heads']}/"
            f"{c['num_key_value_heads']} heads, vocab {c['vocab_size']}, seq {seq}, batch {batch}"}


def case_shape(work, case):
    if case == "llama":
        return llama_shape(work)
    ref = jsonl(f"{work}/{case}-ref.jsonl")
    batch = round(ref[0]["samples_per_sec"] * ref[0]["step_ms"] / 1e3) if ref else 4096
    return {"batch": batch, "tokens": None, "flops": 6 * MLP_WEIGHTS * batch, "warmup": 3,
            "size": f"8 x 1024, batch {batch} in 8 micro-batches"}


def steady(ms, warmup):
    return statistics.median(ms[warmup:] if len(ms) > warmup else ms)


def loss_check(work, case, dtype):
    ref, train = jsonl(f"{work}/{case}-ref.jsonl"), jsonl(f"{work}/{case}-train.jsonl")
    if not ref or not train:
        return None, True
    tol = 1e-2 if dtype != "f32" else 1e-4
    worst = max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-12) for a, b in zip(train, ref))
    same = sum(a["loss"] == b["loss"] for a, b in zip(train, ref))
    ok = worst <= tol and len(train) == len(ref)
    return (f"{len(train)} steps, {same} bit-identical, max rel diff {worst:.2e} (tol {tol:g})"
            f"{'' if ok else ' FAILED'}"), ok


def rows_of(work, case, device):
    dtype = "f32" if "f32" in case or (case == "llama" and device == "cpu") else "bf16"
    shape = case_shape(work, case)
    torch_ms, out = None, []
    tpath = f"{work}/{case}-torch.json"
    if os.path.exists(tpath) and os.path.getsize(tpath):
        t = json.load(open(tpath))
        torch_ms = t["step_ms"]
        out.append(("torch eager" + (" (tf32 off)" if dtype == "f32" else ""), torch_ms,
                    peak_mib(work, case, "torch"), None))
    for kind, label in (("ref", "brigade reference"), ("train", "brigade 2-rank 1 GPU")):
        m = jsonl(f"{work}/{case}-{kind}.jsonl")
        if m:
            out.append((label, steady([x["step_ms"] for x in m], shape["warmup"]),
                        peak_mib(work, case, kind), kind))
    ref_ms = next((ms for label, ms, _, k in out if k == "ref"), None)
    losses, ok = loss_check(work, case, dtype)
    rows = []
    for label, ms, mem, kind in out:
        tflops = shape["flops"] / (ms / 1e3) / 1e12
        rows.append({
            "case": case.replace("-again", ""), "round": 2 if "again" in case else 1,
            "impl": label, "dtype": dtype, "size": shape["size"], "step_ms": round(ms, 2),
            "samples_per_s": round(shape["batch"] / ms * 1e3, 1),
            "tokens_per_s": round(shape["tokens"] / ms * 1e3) if shape["tokens"] else None,
            "tflops": round(tflops, 2), "mfu": round(tflops / PEAK_TFLOPS, 4),
            "vs_torch": round(torch_ms / ms, 3) if torch_ms else None,
            "vs_reference": round(ref_ms / ms, 3) if kind == "train" and ref_ms else None,
            "peak_gpu_mib": mem, "losses_vs_reference": losses if kind == "train" else None,
        })
    return rows, ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("work")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--jsonl", required=True)
    args = p.parse_args()
    gpu = None
    for case in CASES:
        path = f"{args.work}/{case}-torch.json"
        if os.path.exists(path) and os.path.getsize(path):
            gpu = json.load(open(path)).get("gpu")
            break
    all_ok, rows = True, []
    for case in CASES:
        if os.path.exists(f"{args.work}/{case}-ref.log") or os.path.exists(f"{args.work}/{case}-torch.json"):
            r, ok = rows_of(args.work, case, args.device)
            rows += r
            all_ok &= ok
    stamp = {"date": datetime.date.today().isoformat(), "gpu": gpu or args.device,
             "build": "burn 0.22.1 cuda, fusion + autotune"}
    print(f"{'case':<10} {'impl':<26} {'dtype':<5} {'step ms':>9} {'samples/s':>10} {'tokens/s':>9} "
          f"{'TFLOP/s':>8} {'MFU':>6} {'vs torch':>8} {'vs ref':>6} {'GPU MiB':>8}  losses")
    with open(args.jsonl, "a") as f:
        for r in rows:
            f.write(json.dumps({**stamp, **r}) + "\n")
            na = lambda v, fmt: format(v, fmt) if v is not None else "-"
            print(f"{r['case'] + ('²' if r['round'] == 2 else ''):<10} {r['impl']:<26} {r['dtype']:<5} "
                  f"{r['step_ms']:>9.2f} {r['samples_per_s']:>10,.1f} {na(r['tokens_per_s'], ',d'):>9} "
                  f"{r['tflops']:>8.2f} {r['mfu']:>6.1%} {na(r['vs_torch'], '.2f'):>8} "
                  f"{na(r['vs_reference'], '.2f'):>6} {na(r['peak_gpu_mib'], 'd'):>8}  "
                  f"{r['losses_vs_reference'] or ''}")
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
