#!/usr/bin/env python3
"""Kernel time of a brigade run profiled by cubecl (CUBECL_DEBUG_OPTION=profile, each kernel
timed on the device, CUBECL_DEBUG_LOG=FILE), grouped by kernel: where a step's GPU time goes.

usage: kernels.py LOG STEPS [--top 15]

Prints the total kernel time per step, then the kernels that take most of it (per step: time,
launches, share). cubecl's profile mode synchronises around each kernel, so the run's step
time is not the bench's; the kernel times are.
"""

import argparse
import re
from collections import defaultdict

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*(.+)$")


def kernel_name(full):
    # "<op name>: <kernel id> CubeCount ..." : the op name and the kernel's own name.
    name = full.split(" CubeCount")[0]
    name = re.sub(r"\b0x[0-9a-f]+\b|\d{4,}", "#", name)
    return name[:110]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("log")
    p.add_argument("steps", type=int)
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    total, count = defaultdict(float), defaultdict(int)
    with open(args.log, errors="replace") as f:
        for line in f:
            m = LINE.match(line.strip())
            if m:
                ms = float(m.group(1)) * UNITS[m.group(2)]
                k = kernel_name(m.group(3))
                total[k] += ms
                count[k] += 1
    if not total:
        print(f"kernels: no timed kernels in {args.log}")
        return
    all_ms = sum(total.values())
    n = max(args.steps, 1)
    print(f"kernels: {all_ms / n:.2f} ms of kernel time per step ({sum(count.values()) / n:.0f} "
          f"launches), over {n} steps; the top {args.top}:")
    for k in sorted(total, key=total.get, reverse=True)[:args.top]:
        print(f"  {total[k] / n:9.3f} ms {count[k] / n:7.1f}x {total[k] / all_ms:6.1%}  {k}")


if __name__ == "__main__":
    main()
