#!/usr/bin/env python3
"""PyTorch DistributedDataParallel on the CPU work brigade's replicas do: mlp-8x1024
(8 x [Linear(1024) + ReLU] + Linear(10)), cross-entropy, SGD, a global batch split over
`--world` processes (gloo, one compute thread each), gradients summed in DDP's buckets
(`--bucket-mb`, 25 by default) overlapping the backward. `--microbatches M` accumulates M
micro-batches per replica under `no_sync()` before the reducing backward, as brigade does.

Prints one JSON line: samples_per_sec (median step after the warm-up), ms_per_step, losses of
the first steps, the 1-minute load average at the end (a high value: the cores were shared).

usage: torch_ddp_bench.py [--world 2] [--batch 256] [--microbatches 1] [--steps 20]
"""
import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


def model(layers: int, width: int, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(width, width), nn.ReLU()]
    mods.append(nn.Linear(width, 10))
    return nn.Sequential(*mods)


def data(n: int, batch: int, width: int, seed: int):
    """Fixed synthetic batches: x ~ N(0, 1), labels from a random linear teacher."""
    g = torch.Generator().manual_seed(seed + 12345)
    teacher = torch.randn(width, 10, generator=g)
    out = []
    for _ in range(n):
        x = torch.randn(batch, width, generator=g)
        out.append((x, (x @ teacher).argmax(dim=1)))
    return out


def worker(rank: int, args, port: int, results):
    torch.set_num_threads(args.threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=args.world)
    net = nn.parallel.DistributedDataParallel(model(args.layers, 1024, args.seed), bucket_cap_mb=args.bucket_mb)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr)
    per = args.batch // args.world
    mb = per // args.microbatches
    batches = data(4, args.batch, 1024, args.seed)
    times, losses = [], []
    for step in range(args.steps):
        x, y = batches[step % len(batches)]
        x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for m in range(args.microbatches):
            xs, ys = x[m * mb:(m + 1) * mb], y[m * mb:(m + 1) * mb]
            last = m == args.microbatches - 1
            ctx = net.no_sync() if not last else _Null()
            with ctx:
                loss = F.cross_entropy(net(xs), ys) / args.microbatches
                loss.backward()
            total += loss.item()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(total)
    if rank == 0:
        ms = statistics.median(times[args.warmup:]) * 1e3
        results.put({
            "engine": "torch-ddp",
            "world": args.world,
            "threads_per_process": args.threads,
            "batch": args.batch,
            "microbatches_per_replica": args.microbatches,
            "bucket_mb": args.bucket_mb,
            "ms_per_step": round(ms, 2),
            "samples_per_sec": round(args.batch / ms * 1e3, 1),
            "losses": [round(v, 6) for v in losses[:5]],
            "torch": torch.__version__,
            "loadavg_1m_at_end": os.getloadavg()[0],
        })
    dist.destroy_process_group()


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="compute threads per process")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--microbatches", type=int, default=1, help="per replica, accumulated")
    p.add_argument("--bucket-mb", type=float, default=25.0)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(worker, args=(args, free_port(), results), nprocs=args.world, start_method="spawn")
    print(json.dumps(results.get()))


if __name__ == "__main__":
    main()
