#!/usr/bin/env python3
"""The model, data and brigade topology of the Llama pipelining benchmark (llama_compare.sh).

usage: make_llama_bench.py OUT_DIR [--steps N] [--size d=256,ff=688,...]

Writes
  OUT_DIR/hf/config.json, OUT_DIR/hf/model.safetensors
      a random-init transformers LlamaForCausalLM, float32, fixed seed: vocab 512, hidden 256,
      intermediate 688 (SwiGLU), 8 decoder layers, 8 query heads sharing 4 key/value heads
      (head_dim 32), rope_theta 10000, rms_norm_eps 1e-5, max_position_embeddings 256, untied
      embeddings (brigade refuses tied ones), ~6.1 M parameters
  OUT_DIR/tokens.parquet
      `tokens` list<int32>: rows of SEQ + 1 = 129 tokens, batch 32 rows per step, enough for
      --steps (default 64) steps read in file order. Each row is an arithmetic progression mod
      the vocabulary from a random start with a random stride 1..7, so the loss falls within a
      few steps and a wrong split or order shows up in the losses, not only in the first one
  OUT_DIR/llama-bench.toml
      brigade's topology: [model] hf = "hf", seq = 128, the rows in file order (shuffle = false),
      batch 32 in 8 micro-batches, AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay
      0.01, constant lr, no clipping), 2 CPU stages on 127.0.0.1 cut by hand as torch's:
      embedding + blocks 0-3 | blocks 4-7 + norm + head (balance = [5, 6]), schedule gpipe

torch_llama_pipe_bench.py reads the same three (the hyper-parameters below are its defaults).
--size changes the model and batch (keys vocab, d, ff, layers, heads, kv_heads, seq, batch,
microbatches; benches/gpu/side_by_side.sh makes a 16-block d = 2048 Llama this way); the
topology's balance then cuts the blocks in half. --device cuda initialises the model on the GPU.
Needs torch, transformers (5.x), pyarrow, numpy.
"""

import argparse
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

VOCAB, HIDDEN, FF, LAYERS, HEADS, KV_HEADS, POSITIONS = 512, 256, 688, 8, 8, 4, 256
SEQ, BATCH, MICROBATCHES = 128, 32, 8
LR, BETA1, BETA2, EPS, WEIGHT_DECAY = 1e-3, 0.9, 0.999, 1e-8, 0.01
MODEL_SEED, DATA_SEED = 1234, 5678

TOPOLOGY = """\
# Written by benches/torch/make_llama_bench.py: the Llama of the brigade-vs-PyTorch pipelining
# benchmark (benches/torch/llama_compare.sh). torch_llama_pipe_bench.py trains the same
# checkpoint on the same rows in the same order with the same optimizer.
name = "llama-bench"

[model]
hf = "hf"          # config.json + model.safetensors, random init (make_llama_bench.py)
seq = {seq}

[data]
source = "parquet"
path = "tokens.parquet"
tokens = "tokens"
shuffle = false    # step b takes rows b*{batch} .. b*{batch}+{batch_1}, as the torch side does

[train]
steps = 20
batch = {batch}
microbatches = {microbatches}
schedule = "gpipe"
optimizer = "adamw"
lr = {lr}
beta1 = {beta1}
beta2 = {beta2}
eps = {eps}
weight_decay = {weight_decay}
seed = 0

[[hosts]]
name = "local"
address = "127.0.0.1"
devices = ["cpu", "cpu"]

[partition]
stages = 2
method = "manual"
balance = [{first}, {second}]   # embed_tokens + the first half of the blocks | the rest + norm + lm_head (torch's split)
"""


def config():
    from transformers import LlamaConfig

    c = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=FF,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        rms_norm_eps=1e-5,
        max_position_embeddings=max(POSITIONS, SEQ),
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        dtype="float32",
    )
    return c


def write_model(out, device):
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    d = os.path.join(out, "hf")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(MODEL_SEED)
    with torch.device(device):
        model = LlamaForCausalLM(config()).to(torch.float32)
    model.save_pretrained(d, safe_serialization=True)
    with open(os.path.join(d, "config.json")) as f:
        saved = json.load(f)
    assert saved.get("tie_word_embeddings") is False, saved.get("tie_word_embeddings")
    assert os.path.exists(os.path.join(d, "model.safetensors")), os.listdir(d)
    return sum(p.numel() for p in model.parameters())


def write_tokens(out, steps):
    rows = steps * BATCH
    g = np.random.default_rng(DATA_SEED)
    # one draw per row (start, stride - 1): the first rows do not depend on --steps
    draw = g.integers(0, [VOCAB, 7], size=(rows, 2))
    start, stride = draw[:, :1], draw[:, 1:] + 1
    tokens = ((start + stride * np.arange(SEQ + 1)) % VOCAB).astype(np.int32)
    column = pa.array(list(tokens), type=pa.list_(pa.int32()))
    pq.write_table(pa.table({"tokens": column}), os.path.join(out, "tokens.parquet"),
                   row_group_size=4 * BATCH)
    return rows


def write_topology(out):
    text = TOPOLOGY.format(first=1 + LAYERS // 2, second=LAYERS - LAYERS // 2 + 2, seq=SEQ, batch=BATCH, batch_1=BATCH - 1, microbatches=MICROBATCHES,
                           lr=LR, beta1=BETA1, beta2=BETA2, eps=EPS, weight_decay=WEIGHT_DECAY)
    path = os.path.join(out, "llama-bench.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def resize(spec):
    names = {"vocab": "VOCAB", "d": "HIDDEN", "ff": "FF", "layers": "LAYERS", "heads": "HEADS",
             "kv_heads": "KV_HEADS", "seq": "SEQ", "batch": "BATCH", "microbatches": "MICROBATCHES"}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in names:
            raise SystemExit(f"--size: unknown key {key!r}; use {', '.join(names)}")
        globals()[names[key]] = int(value)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output directory (created)")
    p.add_argument("--steps", type=int, default=64, help="steps of batch 32 the token file holds")
    p.add_argument("--size", default="", help="comma-separated KEY=N: vocab, d, ff, layers, heads, "
                   "kv_heads, seq, batch, microbatches")
    p.add_argument("--device", default="cpu", help="where to initialise the model (cpu or cuda)")
    args = p.parse_args()
    resize(args.size)
    os.makedirs(args.out, exist_ok=True)
    params = write_model(args.out, args.device)
    rows = write_tokens(args.out, args.steps)
    topo = write_topology(args.out)
    print(f"{args.out}/hf: LlamaForCausalLM, {params} parameters; "
          f"{args.out}/tokens.parquet: {rows} rows of {SEQ + 1} tokens; {topo}")


if __name__ == "__main__":
    main()
