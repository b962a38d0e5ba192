#!/usr/bin/env python3
"""PyTorch peer for Recur's training-step benchmark (bench/RESULTS.md, "Training step").

The same recurrent model and step as `dotnet run -c Release --project bench/Recur.Bench -- train`:
a (2,4,2) retrofitted-recurrence Llama of the stories15M shape (dim 288, 6 heads, MLP 768, vocab 32000),
sequence 256, T = 4 iterations all with gradients, cross-entropy, backward, AdamW step.
fp32 runs plainly; bf16 runs the forward under CPU autocast with fp32 master weights (as the paper does).

Run with Debian's PyTorch:  /usr/bin/python3 bench/peers/train_step.py --threads 2 --batch 4 --steps 5
"""
import argparse, time, math
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch", type=int, default=4)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--recurrence", type=int, default=4)
p.add_argument("--dtype", choices=["fp32", "bf16", "both"], default="both")
a = p.parse_args()
torch.set_num_threads(a.threads)

DIM, HEADS, KV, MLP, VOCAB, SHAPE = 288, 6, 6, 768, 32000, (2, 4, 2)
HD = DIM // HEADS


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__(); self.weight = nn.Parameter(torch.ones(d)); self.eps = eps
    def forward(self, x):
        dt = x.dtype; x = x.float()
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)).to(dt)


def rope(seq):
    inv = 1.0 / (10000 ** (torch.arange(0, HD, 2).float() / HD))
    ang = torch.outer(torch.arange(seq).float(), inv)
    emb = torch.cat([ang, ang], -1)
    return emb.cos(), emb.sin()


def rot(x, cos, sin):
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], -1) * sin


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm_1, self.norm_2 = RMSNorm(DIM), RMSNorm(DIM)
        self.Wqkv = nn.Linear(DIM, (HEADS + 2 * KV) * HD, bias=False)
        self.proj = nn.Linear(HEADS * HD, DIM, bias=False)
        self.fc = nn.Linear(DIM, 2 * MLP, bias=False)
        self.mproj = nn.Linear(MLP, DIM, bias=False)
    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q, k, v = self.Wqkv(self.norm_1(x)).split([HEADS * HD, KV * HD, KV * HD], -1)
        q = rot(q.view(b, s, HEADS, HD).transpose(1, 2), cos.to(q.dtype), sin.to(q.dtype))
        k = rot(k.view(b, s, KV, HD).transpose(1, 2), cos.to(k.dtype), sin.to(k.dtype))
        v = v.view(b, s, KV, HD).transpose(1, 2)
        # Debian's PyTorch 1.13 has no scaled_dot_product_attention: the same math written out.
        att = (q @ k.transpose(-2, -1)) / math.sqrt(HD)
        att = att.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        o = att @ v
        x = x + self.proj(o.transpose(1, 2).reshape(b, s, DIM))
        g, u = self.fc(self.norm_2(x)).chunk(2, -1)
        return x + self.mproj(F.silu(g) * u)


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        p, r, c = SHAPE
        self.wte = nn.Embedding(VOCAB, DIM)
        self.prelude = nn.ModuleList(Block() for _ in range(p))
        self.adapter = nn.Linear(2 * DIM, DIM, bias=False)
        self.core = nn.ModuleList(Block() for _ in range(r))
        self.coda = nn.ModuleList(Block() for _ in range(c))
        self.ln_f = RMSNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
    def forward(self, ids, T):
        cos, sin = rope(ids.shape[1])
        x = self.wte(ids)
        for blk in self.prelude: x = blk(x, cos, sin)
        e, s = x, torch.zeros_like(x)
        for _ in range(T):
            s = self.adapter(torch.cat([s, e], -1))
            for blk in self.core: s = blk(s, cos, sin)
        for blk in self.coda: s = blk(s, cos, sin)
        return self.lm_head(self.ln_f(s)).float()


def flops_per_token():
    layer = DIM * (HEADS + 2 * KV) * HD + HEADS * HD * DIM + 3 * DIM * MLP + 2 * DIM
    p, r, c = SHAPE
    return 6 * (p + min(a.recurrence, 8) * r + c) * layer + 2 * max(a.recurrence - 8, 0) * r * layer


def run(dtype):
    torch.manual_seed(0)
    m = Recurrent()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=1e-4, foreach=False)
    ids = torch.randint(0, VOCAB, (a.batch, a.seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    phases = []
    def step():
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(dtype == "bf16")):
            logits = m(x, a.recurrence)
        t1 = time.perf_counter()
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step(); opt.zero_grad(set_to_none=True)
        phases.append((t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3))
    step()
    phases.clear()
    t = time.perf_counter()
    for _ in range(a.steps): step()
    sec = (time.perf_counter() - t) / a.steps
    avg = [sum(p[i] for p in phases) / len(phases) for i in range(4)]
    tok = a.batch * a.seq / sec
    print(f"pytorch {dtype}: {sec:.3f} s/step (forward {avg[0]:.3f}, loss {avg[1]:.3f}, backward {avg[2]:.3f}, optimizer {avg[3]:.3f} s), {tok:.0f} tok/s, {tok * flops_per_token() / 1e9:.1f} GFLOP/s (METHOD §6 count), torch {torch.__version__}, {a.threads} threads")


# Matmul throughput of this PyTorch build, to explain fp32 gaps (Debian's BLAS vs libtorch's MKL).
for dt in (torch.float32, torch.bfloat16):
    A = torch.randn(1024, 1024).to(dt); B = torch.randn(1024, 1024).to(dt)
    A @ B; t = time.perf_counter()
    for _ in range(10): A @ B
    print(f"pytorch matmul 1024 {str(dt).split('.')[1]}: {2 * 1024 ** 3 * 10 / (time.perf_counter() - t) / 1e9:.0f} GFLOP/s")
for d in (["fp32", "bf16"] if a.dtype == "both" else [a.dtype]):
    run(d)
