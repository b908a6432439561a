#!/usr/bin/env python3
"""PyTorch eager on one GPU: the peer of brigade's rows in benches/gpu/side_by_side.sh.

usage: torch_peer.py mlp --dtype f32|bf16 --batch 4096 --microbatches 8 --steps 12 --warmup 3
       torch_peer.py llama DIR --steps 6 --warmup 2 [--dtype bf16]
       (--device cpu runs either on the CPU, to try the bench without a GPU)

mlp: mlp-8x1024 (8 x [Linear 1024 + ReLU] + Linear 10), cross-entropy, SGD lr 0.01, the batch
  in micro-batches with gradient accumulation (each micro-batch's mean loss / M), as brigade's
  reference trains it. Data: uniform [-1, 1) inputs and random labels made on the GPU.
llama: DIR is what benches/torch/make_llama_bench.py wrote (hf/ and tokens.parquet and
  llama-bench.toml); the checkpoint's LlamaForCausalLM with sdpa attention, next-token
  cross-entropy, AdamW with the topology's hyper-parameters, batch and micro-batches, rows in
  file order.

Mixed precision as brigade's: f32 master weights and optimizer, torch.autocast(bfloat16) for
the forward (weights cast per use), loss in f32. f32 rows run PyTorch's defaults (TF32 off for
matmuls: torch.backends.cuda.matmul.allow_tf32 is False), stated in the output.

Each step ends with one host read of its loss (as brigade's steps do). Prints one JSON line:
step_ms (median after --warmup), steps_ms, losses, peak_mem_mib (torch.cuda.max_memory_reserved).
"""

import argparse
import json
import statistics
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F


def autocast(args):
    return torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16,
                          enabled=args.dtype == "bf16")


def timed_steps(step, steps, warmup):
    times, losses = [], []
    for s in range(warmup + steps):
        t = time.perf_counter()
        loss = step(s)
        losses.append(loss.item())  # the step's one host sync
        times.append((time.perf_counter() - t) * 1e3)
    return times, losses


def mlp(args):
    torch.manual_seed(0)
    layers = []
    for _ in range(8):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(1024, 10)).to(args.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    m, b = args.microbatches, args.batch
    x = torch.rand(b, 1024, device=args.device) * 2 - 1
    y = torch.randint(0, 10, (b,), device=args.device)

    def step(_s):
        opt.zero_grad(set_to_none=False)
        total = torch.zeros((), device=args.device)
        for i in range(m):
            xs, ys = x[i * b // m:(i + 1) * b // m], y[i * b // m:(i + 1) * b // m]
            with autocast(args):
                out = model(xs)
            loss = F.cross_entropy(out.float(), ys) / m
            loss.backward()
            total += loss.detach()
        opt.step()
        return total

    return timed_steps(step, args.steps, args.warmup)


def llama(args):
    import pyarrow.parquet as pq
    from transformers import LlamaForCausalLM

    with open(f"{args.dir}/llama-bench.toml", "rb") as f:
        topo = tomllib.load(f)
    tr, seq = topo["train"], topo["model"]["seq"]
    b, m = tr["batch"], tr["microbatches"]
    model = LlamaForCausalLM.from_pretrained(f"{args.dir}/hf", dtype=torch.float32,
                                             attn_implementation="sdpa").to(args.device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=tr["lr"], betas=(tr["beta1"], tr["beta2"]),
                            eps=tr["eps"], weight_decay=tr["weight_decay"])
    rows = pq.read_table(f"{args.dir}/tokens.parquet").column("tokens").to_pylist()
    tokens = torch.tensor(rows, dtype=torch.long, device=args.device)

    def step(s):
        opt.zero_grad(set_to_none=False)
        total = torch.zeros((), device=args.device)
        batch = tokens[(s * b) % len(rows):][:b]
        for i in range(m):
            part = batch[i * b // m:(i + 1) * b // m]
            with autocast(args):
                logits = model(input_ids=part[:, :seq]).logits
            loss = F.cross_entropy(logits.float().flatten(0, 1), part[:, 1:].flatten()) / m
            loss.backward()
            total += loss.detach()
        opt.step()
        return total

    return timed_steps(step, args.steps, args.warmup)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=["mlp", "llama"])
    p.add_argument("dir", nargs="?", help="llama: make_llama_bench.py's output directory")
    p.add_argument("--dtype", default="bf16", choices=["f32", "bf16"])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times, losses = mlp(args) if args.model == "mlp" else llama(args)
    print(json.dumps({
        "impl": f"torch {torch.__version__} eager", "model": args.model,
        "dtype": args.dtype, "device": args.device,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "step_ms": statistics.median(times[args.warmup:]), "steps_ms": times,
        "losses": losses,
        "peak_mem_mib": torch.cuda.max_memory_reserved() / 2**20 if gpu else None,
        "gpu": torch.cuda.get_device_name() if gpu else None,
    }))


if __name__ == "__main__":
    main()
