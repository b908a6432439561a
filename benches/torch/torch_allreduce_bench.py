#!/usr/bin/env python3
"""PyTorch's gloo all_reduce alone, the collective DDP's buckets go through: `--members`
processes on this host (one thread each) sum one f32 buffer of each `--mib` size per round, a
barrier before each timed round, as brigade's `allreduce` bench does with its own transport.

Prints one JSON line: median_s, the median seconds of rank 0's timed rounds for each size in
order. Called by `cargo bench -p brigade-benches --bench allreduce` when TORCH_PYTHON names a
Python with torch (install: see benches/torch/ddp_compare.sh).

usage: torch_allreduce_bench.py [--members 2] [--rounds 15] [--warmup 2] --mib 1 4 25 64
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


def worker(rank: int, args, port: int, results):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=args.members)
    medians = []
    for mib in args.mib:
        n = (mib << 20) // 4
        times = []
        for r in range(args.warmup + args.rounds):
            buf = torch.arange(n, dtype=torch.float32).remainder_(7).add_(rank)
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(buf)
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times[args.warmup:]))
    if rank == 0:
        results.put({"median_s": medians, "members": args.members, "mib": args.mib})
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mib", type=int, nargs="+", default=[1, 4, 25, 64])
    args = p.parse_args()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(worker, args=(args, free_port(), results), nprocs=args.members, start_method="spawn")
    print(json.dumps(results.get()))


if __name__ == "__main__":
    main()
