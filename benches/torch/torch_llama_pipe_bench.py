#!/usr/bin/env python3
"""Training throughput of PyTorch's own pipelining on a transformers Llama, on CPU.

usage: torch_llama_pipe_bench.py DIR --schedule gpipe|1f1b [--steps 20]
       torch_llama_pipe_bench.py DIR --single [--single-accum] --threads 2 [--steps 20]

DIR is what make_llama_bench.py wrote: DIR/hf (a LlamaForCausalLM checkpoint) and
DIR/tokens.parquet (`tokens` rows of seq + 1 tokens). brigade trains the same model on the same
rows with DIR/llama-bench.toml; llama_compare.sh runs both, alternating.

Two processes (gloo on 127.0.0.1, 1 intra-op thread each) run torch.distributed.pipelining's
ScheduleGPipe or Schedule1F1B (batch 32 in 8 micro-batches, scale_grads=True: the gradient of
the batch's mean loss) over two stages made of the checkpoint's own modules:
  stage 0: model.embed_tokens + layers 0..3
  stage 1: layers 4..7 + model.norm + lm_head
each computing the rotary position embeddings and the causal mask itself, as LlamaModel does.
Loss: next-token cross-entropy, mean over the micro-batch's tokens (the first seq tokens of a
row are the inputs, the last seq the targets). Optimizer: torch.optim.AdamW on each stage's
parameters, constant lr, no clipping. Step s trains rows s*32 .. s*32+31 in file order.

Before the pipelined run, one process loads the whole model and takes the loss of the first
batch (forward only): the pipelined run's first loss must match it (`first_loss_rel_diff`,
float rounding only, ~1e-7), which checks the split.

Prints one JSON line: samples_per_sec (batch / median step time of rank 0 after --warmup
steps), ms_per_step (median), samples_per_sec_mean (from the total time of the timed steps),
losses, first_loss / reference_first_loss, loadavg_1m_at_end, ...

--single: no pipeline; one process on --threads intra-op threads trains the whole model
(the same checkpoint, rows, loss and AdamW) on the whole batch at once, or with --single-accum on
the pipeline's micro-batches with gradient accumulation (each micro-batch's mean loss / M, so
the gradient is the batch's mean loss's, as scale_grads=True). Prints the same JSON fields
(mode "single"; reference_first_loss is null: the run is itself one process of transformers).

Attention: --attn sdpa (default) or eager, transformers' attn_implementation. On CPU with one
thread, for this model (head_dim 32, 128 tokens), sdpa's forward + backward of a micro-batch
is the faster (see the note printed by --time-attn).
"""

import argparse
import datetime
import json
import os
import platform
import resource
import socket
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

IMPL = "torch.distributed.pipelining"


# ----------------------------------------------------------------------------
# model: the checkpoint's modules, cut into two stages
# ----------------------------------------------------------------------------
def load_model(hf_dir, attn):
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation=attn)
    model.train()  # dropout is 0 anyway; as brigade trains it
    return model


def run_blocks(stage, h):
    """What LlamaModel.forward does around its decoder layers (no cache, no padding)."""
    from transformers.masking_utils import create_causal_mask

    position_ids = torch.arange(h.shape[1], device=h.device).unsqueeze(0)
    mask = create_causal_mask(config=stage.config, inputs_embeds=h, attention_mask=None,
                              cache=None, position_ids=position_ids)
    position_embeddings = stage.rotary_emb(h, position_ids=position_ids)
    for layer in stage.layers:
        h = layer(h, attention_mask=mask, position_embeddings=position_embeddings,
                  position_ids=position_ids)
    return h


class FirstStage(nn.Module):
    """token ids [b, L] -> hidden [b, L, d]: embed_tokens, layers[:cut]."""

    def __init__(self, model, cut):
        super().__init__()
        self.config = model.config
        self.embed_tokens = model.model.embed_tokens
        self.rotary_emb = model.model.rotary_emb
        self.layers = nn.ModuleList(model.model.layers[:cut])

    def forward(self, input_ids):
        return run_blocks(self, self.embed_tokens(input_ids))


class LastStage(nn.Module):
    """hidden [b, L, d] -> logits [b, L, vocab]: layers[cut:], norm, lm_head."""

    def __init__(self, model, cut):
        super().__init__()
        self.config = model.config
        self.rotary_emb = model.model.rotary_emb
        self.layers = nn.ModuleList(model.model.layers[cut:])
        self.norm = model.model.norm
        self.lm_head = model.lm_head

    def forward(self, h):
        return self.lm_head(self.norm(run_blocks(self, h)))


def loss_fn(logits, target):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


# ----------------------------------------------------------------------------
# data: DIR/tokens.parquet in file order
# ----------------------------------------------------------------------------
def read_rows(path, seq):
    import numpy as np
    import pyarrow.parquet as pq

    col = pq.read_table(path, columns=["tokens"]).column("tokens").combine_chunks()
    rows = np.stack([np.asarray(r, dtype=np.int64)[: seq + 1] for r in col.to_pylist()])
    assert rows.shape[1] == seq + 1, f"{path}: rows of {rows.shape[1]} tokens, need {seq + 1}"
    return torch.from_numpy(rows)


def batch_at(rows, step, batch, seq):
    """Step s: rows s*batch .. s*batch+batch-1 (wrapping around the file, as another epoch)."""
    n = rows.shape[0] // batch
    b = rows[(step % n) * batch: (step % n + 1) * batch]
    return b[:, :seq].contiguous(), b[:, 1: seq + 1].contiguous()


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine_info():
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # our two ranks add ~2; much more means something else competed for the cores
        "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def reference_first_loss(args):
    """The whole model in one process, forward only, on the first batch: the loss the
    pipelined first step must report."""
    torch.set_num_threads(args.threads)
    model = load_model(os.path.join(args.dir, "hf"), args.attn)
    rows = read_rows(os.path.join(args.dir, "tokens.parquet"), args.seq)
    x, y = batch_at(rows, 0, args.batch, args.seq)
    with torch.no_grad():
        logits = model(input_ids=x).logits
        return loss_fn(logits, y).item()


def time_attn(args):
    """One micro-batch's forward + backward through the whole model, 1 thread, per attention."""
    torch.set_num_threads(args.threads)
    rows = read_rows(os.path.join(args.dir, "tokens.parquet"), args.seq)
    x, y = batch_at(rows, 0, args.batch // args.microbatches, args.seq)
    out = {}
    for attn in ("eager", "sdpa"):
        model = load_model(os.path.join(args.dir, "hf"), attn)
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            loss_fn(model(input_ids=x).logits, y).backward()
            ts.append((time.perf_counter() - t0) * 1e3)
            model.zero_grad(set_to_none=True)
        out[attn] = {"fwd_bwd_ms_median": round(statistics.median(ts[1:]), 1), "loss": loss_fn(
            model(input_ids=x).logits, y).item()}
    print(json.dumps({"mode": "time_attn", "microbatch": x.shape[0], "threads": args.threads,
                      **out, "loadavg_1m_at_end": round(os.getloadavg()[0], 2)}), flush=True)


# ----------------------------------------------------------------------------
# single process (no pipeline)
# ----------------------------------------------------------------------------
def run_single(args):
    """The whole model in one process on --threads threads: the whole batch as one micro-batch,
    or (--single-accum) the pipeline's micro-batches with gradient accumulation."""
    torch.set_num_threads(args.threads)
    model = load_model(os.path.join(args.dir, "hf"), args.attn)
    n_params = sum(p.numel() for p in model.parameters())
    rows = read_rows(os.path.join(args.dir, "tokens.parquet"), args.seq)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(args.beta1, args.beta2),
                            eps=args.eps, weight_decay=args.weight_decay)
    mb = args.microbatches if args.single_accum else 1

    losses, step_ms = [], []
    t_start = None
    for s in range(args.steps):
        if s == args.warmup:
            t_start = time.perf_counter()
        x, y = batch_at(rows, s, args.batch, args.seq)
        t0 = time.perf_counter()
        if mb == 1:
            loss = loss_fn(model(input_ids=x).logits, y)
            loss.backward()
            loss = loss.detach()
        else:  # the pipeline's micro-batches, gradients accumulated (scale_grads=True)
            mb_losses = []
            for xm, ym in zip(x.tensor_split(mb), y.tensor_split(mb)):
                l = loss_fn(model(input_ids=xm).logits, ym)
                (l / mb).backward()
                mb_losses.append(l.detach())
            loss = torch.stack(mb_losses).mean()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_ms.append((time.perf_counter() - t0) * 1e3)
        losses.append(loss.item())
    total = time.perf_counter() - t_start

    timed = args.steps - args.warmup
    median_ms = statistics.median(step_ms[args.warmup:])
    res = {
        "mode": "single",
        "impl": "plain torch (no pipeline)" + (", grad accumulation" if mb > 1 else ""),
        "model": "transformers LlamaForCausalLM",
        "attn_implementation": args.attn,
        "schedule": None,
        "world_size": 1,
        "backend": None,
        "threads_per_rank": torch.get_num_threads(),
        "interop_threads_per_rank": torch.get_num_interop_threads(),
        "params_per_rank": [n_params],
        "batch": args.batch,
        "microbatches": mb,
        "seq": args.seq,
        "steps": args.steps,
        "warmup": args.warmup,
        "optimizer": f"AdamW(lr={args.lr}, betas=({args.beta1}, {args.beta2}), "
                     f"eps={args.eps}, weight_decay={args.weight_decay})",
        "samples_per_sec": args.batch / median_ms * 1e3,
        "ms_per_step": median_ms,
        "ms_per_step_min": min(step_ms[args.warmup:]),
        "samples_per_sec_mean": timed * args.batch / total,
        "step_ms": [round(t, 1) for t in step_ms],
        "first_loss": losses[0],
        "reference_first_loss": None,
        "first_loss_rel_diff": None,
        "final_loss": losses[-1],
        "losses": losses,
        "peak_rss_mib_per_rank": [round(peak_rss_mib(), 1)],
        **machine_info(),
    }
    print(json.dumps(res), flush=True)


# ----------------------------------------------------------------------------
# pipelined (2 ranks, gloo)
# ----------------------------------------------------------------------------
def pipe_worker(rank, world, args, init_method, ref_loss):
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    assert world == 2, "this benchmark is written for exactly 2 pipeline stages"

    model = load_model(os.path.join(args.dir, "hf"), args.attn)
    cut = model.config.num_hidden_layers // 2
    stage_mod = (FirstStage if rank == 0 else LastStage)(model, cut)
    del model  # the other stage's modules go with it
    n_params = sum(p.numel() for p in stage_mod.parameters())
    rows = read_rows(os.path.join(args.dir, "tokens.parquet"), args.seq)

    stage = PipelineStage(stage_mod, stage_index=rank, num_stages=world, device=torch.device("cpu"))
    sched_cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[args.schedule]
    sched = sched_cls(stage, n_microbatches=args.microbatches, loss_fn=loss_fn)  # scale_grads=True
    opt = torch.optim.AdamW(stage_mod.parameters(), lr=args.lr, betas=(args.beta1, args.beta2),
                            eps=args.eps, weight_decay=args.weight_decay)
    is_first, is_last = rank == 0, rank == world - 1

    losses, step_ms = [], []
    t_start = None
    dist.barrier()
    for s in range(args.steps):
        if s == args.warmup:
            dist.barrier()
            t_start = time.perf_counter()
        x, y = batch_at(rows, s, args.batch, args.seq)
        t0 = time.perf_counter()
        mb_losses = []
        if is_first:
            sched.step(x)
        else:
            sched.step(target=y, losses=mb_losses, return_outputs=False)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_ms.append((time.perf_counter() - t0) * 1e3)
        if is_last:
            # the mean of the (equal-sized) micro-batches' mean losses: the batch's mean loss
            losses.append(torch.stack([l.detach() for l in mb_losses]).mean().item())
    dist.barrier()
    total = time.perf_counter() - t_start

    mine = {"rank": rank, "total_s": total, "step_ms": step_ms, "losses": losses,
            "rss": round(peak_rss_mib(), 1), "params": n_params,
            "threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        timed = args.steps - args.warmup
        total = max(g["total_s"] for g in gathered)
        median_ms = statistics.median(gathered[0]["step_ms"][args.warmup:])
        last = gathered[-1]
        res = {
            "mode": "pipeline",
            "impl": IMPL,
            "model": "transformers LlamaForCausalLM",
            "attn_implementation": args.attn,
            "schedule": args.schedule,
            "world_size": world,
            "backend": "gloo",
            "threads_per_rank": gathered[0]["threads"],
            "interop_threads_per_rank": gathered[0]["interop"],
            "params_per_rank": [g["params"] for g in gathered],
            "batch": args.batch,
            "microbatches": args.microbatches,
            "seq": args.seq,
            "steps": args.steps,
            "warmup": args.warmup,
            "optimizer": f"AdamW(lr={args.lr}, betas=({args.beta1}, {args.beta2}), "
                         f"eps={args.eps}, weight_decay={args.weight_decay})",
            "samples_per_sec": args.batch / median_ms * 1e3,
            "ms_per_step": median_ms,
            "ms_per_step_min": min(gathered[0]["step_ms"][args.warmup:]),
            "samples_per_sec_mean": timed * args.batch / total,
            "step_ms": [round(t, 1) for t in gathered[0]["step_ms"]],
            "first_loss": last["losses"][0],
            "reference_first_loss": ref_loss,
            "first_loss_rel_diff": (abs(last["losses"][0] - ref_loss) / abs(ref_loss)
                                    if ref_loss is not None else None),
            "final_loss": last["losses"][-1],
            "losses": last["losses"],
            "peak_rss_mib_per_rank": [g["rss"] for g in gathered],
            **machine_info(),
        }
        print(json.dumps(res), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pipeline(args):
    import sys

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ref = None if args.no_check else reference_first_loss(args)
    if ref is not None:
        print(f"reference (one process, transformers) first-batch loss {ref:.7f}", file=sys.stderr)
    import torch.multiprocessing as mp

    init = f"tcp://127.0.0.1:{free_port()}"
    mp.spawn(pipe_worker, args=(2, args, init, ref), nprocs=2, join=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", help="make_llama_bench.py's output directory (hf/, tokens.parquet)")
    p.add_argument("--schedule", choices=["gpipe", "1f1b"], default="gpipe")
    p.add_argument("--steps", type=int, default=20, help="total steps, including warm-up")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--microbatches", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.999)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                   help="transformers attn_implementation")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads per rank (with --single: of the one process)")
    p.add_argument("--single", action="store_true",
                   help="one process, no pipeline: the whole model on --threads threads")
    p.add_argument("--single-accum", action="store_true",
                   help="with --single: the batch in --microbatches with gradient accumulation "
                        "(the pipeline's shapes) instead of the whole batch at once")
    p.add_argument("--no-check", action="store_true",
                   help="skip the one-process reference loss of the first batch")
    p.add_argument("--time-attn", action="store_true",
                   help="instead: time one micro-batch's forward+backward with eager and sdpa")
    args = p.parse_args()
    if args.batch % args.microbatches:
        p.error("--batch must be divisible by --microbatches")
    if not 0 <= args.warmup < args.steps:
        p.error("need 0 <= --warmup < --steps")
    if args.single_accum and not args.single:
        p.error("--single-accum goes with --single")
    if args.time_attn:
        time_attn(args)
    elif args.single:
        run_single(args)
    else:
        run_pipeline(args)


if __name__ == "__main__":
    main()
