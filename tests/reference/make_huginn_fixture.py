#!/usr/bin/env python3
"""Tiny Huginn-shaped model and its logits, from an independent PyTorch reference of Huginn-0125's forward.

Run with Debian's PyTorch:  /usr/bin/python3 tests/reference/make_huginn_fixture.py
Writes tests/fixtures/models/huginn-tiny/{config.json, model.safetensors} and
tests/fixtures/parity/huginn-tiny.safetensors (input_ids, s0, logits_T1, logits_T4, logits_T8).
Deterministic (fixed seed, one thread, sorted layout): two runs give byte-identical files.

Semantics (written from seal-rg/recurrent-pretraining:recpre/raven_modeling_minimal.py, METHOD 2.1):
  * embeddings scaled by init_values.embed_scale = sqrt(h);
  * "sandwich" blocks: x = norm_2(x + attn(norm_1(x))); x = norm_4(x + mlp(norm_3(x)));
  * attention: fused Wqkv split [h, n_kv*d, n_kv*d]; per-head qk_bias [2, 1, n_heads, d] added to q and k
    after the head view and before RoPE; RoPE on interleaved pairs (x[2i], x[2i+1]) rotated by the angle
    stored in the checkpoint's freqs_cis buffer [1, block_size, 1, d/2, 2] (cos, sin), computed in fp32;
    causal softmax attention with scale 1/sqrt(d);
  * SwiGLU MLP on the fused fc (rows gate, up);
  * RMSNorm: normalise in fp32, cast back, multiply by the weight;
  * s_i = core(adapter(concat[s_{i-1}, e])) for i = 1..T (state first); then ln_f on the final state;
    then the coda; then ln_f again; the head is the embedding (tie_embeddings, no lm_head.weight in the file).
"""

import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io as st  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(REPO, "tests", "fixtures")
torch.set_num_threads(1)

H, HEADS, D, INTER, VOCAB, BLOCK = 64, 4, 16, 80, 128, 64
P, R, C = 1, 2, 1
EPS, ROPE_BASE = 1e-6, 50000.0


def rms(x, w):
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * w


def freqs_table():
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    ang = torch.outer(torch.arange(BLOCK, dtype=torch.float32), inv)
    return torch.stack([ang.cos(), ang.sin()], dim=-1)[None, :, None, :, :]  # [1, block, 1, d/2, 2]


def rope_pairs(x, table):
    # x [B, S, heads, d]; table [1, S, 1, d/2, 2]
    pairs = x.float().unflatten(-1, (-1, 2))
    c, s = table[..., 0], table[..., 1]
    out = torch.stack([pairs[..., 0] * c - pairs[..., 1] * s, pairs[..., 1] * c + pairs[..., 0] * s], dim=-1)
    return out.flatten(-2).to(x.dtype)


def block(w, pre, x, table, kv=None):
    """One sandwich block on x [B, S, h]. kv, when given, is a cache's update: it takes this step's k, v
    [B, heads, S, d] and returns every entry the queries attend to (official_adaptive.py's cache); a step of several
    positions (a prompt) then has each of them present, so it attends causally like the cache-free forward."""
    b, s, _ = x.shape
    h = rms(x, w[pre + "norm_1.weight"])
    q, k, v = (h @ w[pre + "attn.Wqkv.weight"].T).split([H, H, H], dim=-1)
    q, k, v = (t.view(b, s, HEADS, D) for t in (q, k, v))
    bias = w[pre + "attn.qk_bias"]
    q, k = q + bias[0], k + bias[1]
    q, k = rope_pairs(q, table), rope_pairs(k, table)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if kv is not None:
        k, v = kv(k, v)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
    if s > 1:
        assert k.shape[2] == s
        scores = scores.masked_fill(~torch.ones(s, s, dtype=torch.bool).tril(), float("-inf"))
    y = scores.softmax(-1) @ v
    y = y.transpose(1, 2).reshape(b, s, H) @ w[pre + "attn.proj.weight"].T
    x = rms(x + y, w[pre + "norm_2.weight"])
    gate, up = (rms(x, w[pre + "norm_3.weight"]) @ w[pre + "mlp.fc.weight"].T).chunk(2, dim=-1)
    m = (torch.nn.functional.silu(gate) * up) @ w[pre + "mlp.proj.weight"].T
    return rms(x + m, w[pre + "norm_4.weight"])


def forward(w, ids, s0, steps):
    table = w["freqs_cis"][:, : ids.shape[1]]
    e = w["transformer.wte.weight"][ids] * math.sqrt(H)
    for j in range(P):
        e = block(w, f"transformer.prelude.{j}.", e, table)
    s = s0
    for _ in range(steps):
        s = torch.cat([s, e], dim=-1) @ w["transformer.adapter.weight"].T
        for j in range(R):
            s = block(w, f"transformer.core_block.{j}.", s, table)
    s = rms(s, w["transformer.ln_f.weight"])
    for j in range(C):
        s = block(w, f"transformer.coda.{j}.", s, table)
    s = rms(s, w["transformer.ln_f.weight"])
    return s @ w["transformer.wte.weight"].T


def main():
    g = torch.Generator().manual_seed(1250)
    w = {"transformer.wte.weight": torch.randn(VOCAB, H, generator=g) * 0.1,
         "transformer.adapter.weight": (torch.rand(H, 2 * H, generator=g) * 2 - 1) / math.sqrt(2 * H),
         "transformer.ln_f.weight": 1 + torch.randn(H, generator=g) * 0.1,
         "freqs_cis": freqs_table()}
    for sec, n in (("prelude", P), ("core_block", R), ("coda", C)):
        for j in range(n):
            pre = f"transformer.{sec}.{j}."
            w[pre + "attn.Wqkv.weight"] = torch.randn(3 * H, H, generator=g) * 0.08
            w[pre + "attn.proj.weight"] = torch.randn(H, H, generator=g) * 0.08
            w[pre + "attn.qk_bias"] = torch.randn(2, 1, HEADS, D, generator=g) * 0.3
            w[pre + "mlp.fc.weight"] = torch.randn(2 * INTER, H, generator=g) * 0.08
            w[pre + "mlp.proj.weight"] = torch.randn(H, INTER, generator=g) * 0.08
            for k in range(1, 5):
                w[pre + f"norm_{k}.weight"] = 1 + torch.randn(H, generator=g) * 0.1
    std = math.sqrt(2 / (5 * H))
    config = {
        "architectures": ["RavenForCausalLM"],
        "auto_map": {"AutoConfig": "raven_config_minimal.RavenConfig",
                     "AutoModelForCausalLM": "raven_modeling_minimal.RavenForCausalLM"},
        "model_type": "huginn_raven",
        "bias": False, "block_class_name": "SandwichBlock", "block_size": BLOCK,
        "effective_expected_depth": P + C + R * 32, "head_dim": D,
        "init_orthogonal": False, "init_strategy": "takase",
        "init_values": {"embed_scale": math.sqrt(H), "embedding": std,
                        "out_proj": std / math.sqrt(2 * (P + C + R * 32)), "std": std},
        "injection_type": "linear", "intermediate_size": INTER, "mean_backprop_depth": 8, "mean_recurrence": 32,
        "mlp_class_name": "GatedMLP", "n_embd": H, "n_heads": HEADS, "n_layers": P + R + C,
        "n_layers_in_coda": C, "n_layers_in_prelude": P, "n_layers_in_recurrent_block": R,
        "nonlin_name": "SiLU", "norm_class_name": "RMSNorm_llama", "norm_eps": EPS, "num_key_value_heads": HEADS,
        "padded_vocab_size": VOCAB, "padding_multiple": 4096, "qk_bias": True, "rope_base": ROPE_BASE,
        "sampling_scheme": "poisson-lognormal-filling", "state_init": "like-init", "test_time_noise": 0,
        "test_time_noise_type": "fixed", "tie_embeddings": True, "torch_dtype": "float32", "vocab_size": VOCAB,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
    }
    model_dir = os.path.join(FIX, "models", "huginn-tiny")
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    st.save_file(w, os.path.join(model_dir, "model.safetensors"), {"format": "pt"})

    ids = torch.randint(3, VOCAB, (2, 10), generator=g)
    s0 = torch.randn(2, 10, H, generator=g) * 0.5
    out = {"input_ids": ids, "s0": s0}
    with torch.no_grad():
        for t in (1, 4, 8):
            out[f"logits_T{t}"] = forward(w, ids, s0, t)
    # Self-check: feeding the tokens one by one without a cache is the same causal model.
    with torch.no_grad():
        last = forward(w, ids[:, :6], s0[:, :6], 4)[:, -1]
        assert (last - out["logits_T4"][:, 5]).abs().max().item() < 1e-5
    st.save_file(out, os.path.join(FIX, "parity", "huginn-tiny.safetensors"), {"format": "pt"})
    print("wrote", model_dir, "and parity/huginn-tiny.safetensors")


if __name__ == "__main__":
    main()
