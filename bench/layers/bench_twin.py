#!/usr/bin/env python3
"""bench/layers/bench_twin.py -- brigade against a PyTorch twin of the same
model: training tokens/s of gpt-tiny and llama-tiny, same data, same batch,
same thread count, measured in the same run with the two sides interleaved.

brigade side: `brigade train MODEL --data tokens:PREFIX` on one stage with
BRIGADE_BLAS_THREADS=T; for T = 2 also `--dp 2` (two ranks, one thread
each: brigade's own way to use two cores). Its number is the tokens/s of the
last progress window (steady state, start-up and the first window excluded).
PyTorch side: the same architecture written with torch.nn (GPT-2 blocks with
a tied head; Llama blocks with RMSNorm, grouped-query attention, rotary
positions in the rotate_half form, SwiGLU and no biases), AdamW, the same
windows of T+1 tokens from the same shards, torch.set_num_threads(T), timed
over the same number of steps after a warm-up.

Prints per (model, threads) the median and the best (max) tokens/s of the
interleaved repeats and the ratio of medians. When torch cannot be imported
it prints SKIP with the reason and exits 0: torch is a measuring reference
only, never a build or test dependency.
Must not write anything but under its --work directory.
"""
import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import time

MODELS = {
    # name: (kind, vocab, ctx, C, heads, kv_heads, hidden, layers)
    "gpt-tiny": ("gpt", 256, 64, 64, 4, 4, 256, 2),
    "llama-tiny": ("llama", 256, 64, 64, 4, 2, 172, 2),
}


def torch_twin(kind, vocab, ctx, C, heads, kv, hidden, layers):
    """The PyTorch model of MODELS[name]; returns an nn.Module. One long
    function on purpose: its classes close over the sizes, as the graph
    file's `let`s do, and read top to bottom like the .graph file."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    hs = C // heads

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(C))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.weight

    def rope_tables():
        inv = 10000.0 ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        ang = torch.arange(ctx, dtype=torch.float64)[:, None] * inv[None, :]
        ang = torch.cat([ang, ang], dim=-1)
        return ang.cos().float(), ang.sin().float()

    def rotate_half(x):
        a, b = x[..., : hs // 2], x[..., hs // 2 :]
        return torch.cat([-b, a], dim=-1)

    class Attention(nn.Module):
        def __init__(self, bias, rope):
            super().__init__()
            self.qkv = nn.Linear(C, C + 2 * kv * hs, bias=bias)
            self.proj = nn.Linear(C, C, bias=bias)
            self.rope = rope
            if rope:
                cos, sin = rope_tables()
                self.register_buffer("cos", cos, persistent=False)
                self.register_buffer("sin", sin, persistent=False)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(x).split([C, kv * hs, kv * hs], dim=-1)
            q = q.view(B, T, heads, hs).transpose(1, 2)
            k = k.view(B, T, kv, hs).transpose(1, 2)
            v = v.view(B, T, kv, hs).transpose(1, 2)
            if self.rope:
                cos, sin = self.cos[:T], self.sin[:T]
                q = q * cos + rotate_half(q) * sin
                k = k * cos + rotate_half(k) * sin
            if kv != heads:
                k = k.repeat_interleave(heads // kv, dim=1)
                v = v.repeat_interleave(heads // kv, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(B, T, C))

    class GPTBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.attn = Attention(True, False)
            self.fc, self.proj = nn.Linear(C, hidden), nn.Linear(hidden, C)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.proj(F.gelu(self.fc(self.ln_2(x)), approximate="tanh"))

    class LlamaBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention_norm, self.ffn_norm = RMSNorm(), RMSNorm()
            self.attention = Attention(False, True)
            self.w13 = nn.Linear(C, 2 * hidden, bias=False)
            self.w2 = nn.Linear(hidden, C, bias=False)

        def forward(self, x):
            x = x + self.attention(self.attention_norm(x))
            g, u = self.w13(self.ffn_norm(x)).chunk(2, dim=-1)
            return x + self.w2(F.silu(g) * u)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, C)
            gpt = kind == "gpt"
            self.pos = nn.Embedding(ctx, C) if gpt else None
            self.blocks = nn.ModuleList(GPTBlock() if gpt else LlamaBlock() for _ in range(layers))
            self.norm = nn.LayerNorm(C) if gpt else RMSNorm()
            self.head = nn.Linear(C, vocab, bias=False)
            if gpt:
                self.head.weight = self.tok.weight  # tied, as gpt-tiny's share=

        def forward(self, idx, targets):
            x = self.tok(idx)
            if self.pos is not None:
                x = x + self.pos(torch.arange(idx.shape[1]))
            for b in self.blocks:
                x = b(x)
            logits = self.head(self.norm(x))
            return F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    return Model()


def read_tokens(prefix):
    """The train split of a `brigade data` prefix as one list of ints."""
    import glob
    import struct

    toks = []
    for path in sorted(glob.glob(prefix + "_train_*.bin")):
        with open(path, "rb") as f:
            head = struct.unpack("<256i", f.read(1024))
            width = 2 if head[1] == 1 else 4
            data = f.read(head[2] * width)
        toks.extend(struct.unpack("<%d%s" % (head[2], "H" if width == 2 else "I"), data))
    return toks


def run_torch(args):
    """One PyTorch measurement in this process; prints 'tok/s X'."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    spec = MODELS[args.model]
    ctx = spec[2]
    model = torch_twin(*spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    toks = torch.tensor(read_tokens(args.data), dtype=torch.long)
    nwin = (len(toks) - 1) // ctx
    g = torch.Generator().manual_seed(7)

    def step():
        rows = torch.randint(0, nwin, (args.batch,), generator=g) * ctx
        win = torch.stack([toks[r : r + ctx + 1] for r in rows.tolist()])
        opt.zero_grad(set_to_none=True)
        loss = model(win[:, :-1], win[:, 1:])
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    dt = time.perf_counter() - t0
    print("tok/s %.1f loss %.4f" % (args.steps * args.batch * ctx / dt, float(loss)))


def run_brigade(args, model, threads, dp):
    """brigade's steady-state tokens/s over its last `steps` steps: from the
    cumulative rates its progress lines print after the warm-up and at the
    end (tokens / rate is the wall time since training started)."""
    env = dict(os.environ, BRIGADE_BLAS_THREADS=str(threads))
    total = args.warmup + args.steps
    cmd = [args.brigade, "train", os.path.join(args.src, "models", model + ".graph"),
           "--data", "tokens:" + args.data, "--batch", str(args.batch), "--dp", str(dp),
           "--micro-batches", "1", "--steps", str(total), "--log-every", str(math.gcd(args.warmup, total)),
           "--eval-batches", "1"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError("brigade failed: %s\n%s" % (" ".join(cmd), out.stderr[-2000:]))
    lines = re.findall(r"step (\d+)/\d+ \| loss [0-9.]+ \| ([0-9.]+) tok/s", out.stdout)
    rate = {int(s): float(r) for s, r in lines}
    if args.warmup not in rate or total not in rate:
        raise RuntimeError("no progress lines at steps %d and %d:\n%s"
                           % (args.warmup, total, out.stdout[-2000:]))
    tok = args.batch * MODELS[model][2]
    window = total * tok / rate[total] - args.warmup * tok / rate[args.warmup]
    return args.steps * tok / window


def run_torch_sub(args, model, threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-run", "--model", model,
           "--threads", str(threads), "--data", args.data, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"tok/s ([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("torch twin failed:\n" + out.stderr[-2000:])
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brigade")
    ap.add_argument("--src", default=".")
    ap.add_argument("--data", required=True, help="tokens prefix written by `brigade data`")
    ap.add_argument("--models", default="gpt-tiny,llama-tiny")
    ap.add_argument("--threads-list", default="1,2")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--torch-run", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch_run:
        return run_torch(args)
    try:
        import torch  # noqa: F401
    except Exception as e:  # any import failure is a reason to skip
        print("SKIP: torch is not importable (%s): the PyTorch twin needs it" % e)
        return 0
    print("brigade vs PyTorch %s, batch %d x ctx 64, %d timed steps after %d warm-up, "
          "%d interleaved repeats (tokens/s: median, best)"
          % (torch.__version__, args.batch, args.steps, args.warmup, args.repeats))
    for model in args.models.split(","):
        for threads in [int(t) for t in args.threads_list.split(",")]:
            sides = {"brigade": lambda: run_brigade(args, model, threads, 1),
                     "torch": lambda: run_torch_sub(args, model, threads)}
            if threads == 2:
                sides["brigade dp2"] = lambda: run_brigade(args, model, 1, 2)
            got = {k: [] for k in sides}
            for _ in range(args.repeats):
                for k, f in sides.items():
                    got[k].append(f())
            med = {k: statistics.median(v) for k, v in got.items()}
            for k, v in got.items():
                print("%-10s %d thread%s %-12s median %9.0f  best %9.0f  ratio to torch %.2f"
                      % (model, threads, "s" if threads > 1 else " ", k, med[k], max(v),
                         med[k] / med["torch"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
