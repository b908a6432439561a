#!/usr/bin/env python3
"""PyTorch's side of `cargo bench -p brigade-benches --bench step` and `--bench gemm_shapes`:
one core (1 intra-op thread), f32.

* the step of mlp-8x1024 (8 x [Linear 1024 + ReLU] + Linear 10, batch 256, SGD) as 8
  micro-batches of 32 with gradient accumulation, split into forward, backward (+ accumulation)
  and optimizer, median over steps;
* the GEMM shapes of one 1024 x 1024 linear layer, GFLOP/s.

Prints one JSON line. Usage: python torch_step.py [--steps 12]
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def step_breakdown(steps):
    torch.manual_seed(0)
    layers = []
    for _ in range(8):
        layers += [nn.Linear(1024, 1024), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(1024, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(256, 1024)
    y = torch.randint(0, 10, (256,))
    out = {"forward_ms": [], "backward_ms": [], "optimizer_ms": [], "step_ms": []}
    for s in range(steps + 2):
        f = b = 0.0
        t_step = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        for mb in range(8):
            xs, ys = x[mb * 32:(mb + 1) * 32], y[mb * 32:(mb + 1) * 32]
            t = time.perf_counter()
            loss = F.cross_entropy(model(xs), ys) / 8
            f += time.perf_counter() - t
            t = time.perf_counter()
            loss.backward()
            b += time.perf_counter() - t
        t = time.perf_counter()
        opt.step()
        o = time.perf_counter() - t
        total = time.perf_counter() - t_step
        if s >= 2:
            out["forward_ms"].append(f * 1e3)
            out["backward_ms"].append(b * 1e3)
            out["optimizer_ms"].append(o * 1e3)
            out["step_ms"].append(total * 1e3)
    return {k: statistics.median(v) for k, v in out.items()}


def gemm_shapes():
    x, w, g, xb = (torch.randn(32, 1024), torch.randn(1024, 1024), torch.randn(32, 1024),
                   torch.randn(256, 1024))
    flops = 2.0 * 32 * 1024 * 1024
    cases = {
        "forward x[32,1024] @ W": (flops, lambda: x @ w),
        "dx g[32,1024] @ W^T": (flops, lambda: g @ w.t()),
        "dW x^T @ g[32,1024]": (flops, lambda: x.t() @ g),
        "forward xb[256,1024] @ W": (8 * flops, lambda: xb @ w),
    }
    res = {}
    for name, (fl, f) in cases.items():
        for _ in range(3):
            f()
        n = 20
        t = time.perf_counter()
        for _ in range(n):
            f()
        ms = (time.perf_counter() - t) * 1e3 / n
        res[name] = {"ms": ms, "gflops": fl / ms / 1e6}
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=12)
    a = p.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"torch": torch.__version__, "threads": 1,
                      "step_8x32": step_breakdown(a.steps), "gemm": gemm_shapes()}))


if __name__ == "__main__":
    main()
