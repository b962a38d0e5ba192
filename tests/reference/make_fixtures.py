#!/usr/bin/env python3
"""Generate Recur's golden fixtures (tests/fixtures/**) with an independent PyTorch reference.

Run from anywhere with Debian's PyTorch:  /usr/bin/python3 tests/reference/make_fixtures.py
The output is deterministic: fixed seeds, one CPU thread, sorted safetensors
layout and sorted JSON, so two runs give byte-identical files.

What is implemented here (spec: /work/shared/docs/METHOD.md, "METHOD"):
  * Hugging Face Llama forward (semantics of
    huggingface/transformers:src/transformers/models/llama/modeling_llama.py and
    the llama3 rope scaling of src/transformers/modeling_rope_utils.py),
  * Hugging Face OLMo-2 forward (src/transformers/models/olmo2/modeling_olmo2.py),
  * the retrofitted recurrent model in the Raven/Huginn checkpoint layout
    (METHOD 2.1, 2.3, 2.5, 2.7; mcleish7/retrofitting-recurrence
    convert_pretrained_model/raven_modeling_minimal_llama.py),
  * Muon (METHOD 4.4, KellerJordan/Muon:muon.py), AdamW (torch.optim.AdamW),
    the depth sampler (METHOD 3.1, mcleish7/retrofitting-recurrence:train.py
    num_steps_sampler), the recurrence curriculum (METHOD 3.3), the WSD learning
    rate factor (METHOD 4.5) and FLOPs accounting (METHOD 6).

Self-checks (assertions at generation time):
  * KV-cached token-by-token decoding == full forward (llama-gqa, and the
    recurrent models with one cache slot per unrolled layer application);
  * left-padded forward == unpadded forward on the real tokens;
  * recurrent model at T=1 with adapter [0 | I] and s0 = 0 == the plain HF model
    run on the kept layers (METHOD 2.8), for Llama and OLMo-2 blocks;
  * the bf16 NS5 output has singular values in roughly [0.7, 1.2] (asserted: [0.6, 1.25]);
  * our own transcription of Muon's auxiliary Adam matches torch.optim.AdamW.
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io as st  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(REPO, "tests", "fixtures")

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HUGINN_STD = 0.008703882797784892  # METHOD 2.5, config init_values.std


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_tensors(path, tensors, metadata=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    md = {"format": "pt"}
    if metadata:
        md.update(metadata)
    st.save_file(tensors, path, md)


def max_abs_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def check_close(name, a, b, atol):
    d = max_abs_diff(a, b)
    assert d <= atol, f"self-check {name} failed: max|diff| = {d:.3e} > {atol:.1e}"
    print(f"  ok  {name}: max|diff| = {d:.2e}")


# ----------------------------------------------------------------------------------------------
# Architecture description shared by the HF and Raven forwards
# ----------------------------------------------------------------------------------------------

class Arch:
    """Shape and numerics of one model, independent of the checkpoint layout."""

    def __init__(self, style, hidden, n_heads, n_kv, head_dim, eps, theta, rope_scaling):
        assert style in ("llama", "olmo2")
        self.style = style
        self.hidden = hidden
        self.n_heads = n_heads
        self.n_kv = n_kv
        self.head_dim = head_dim
        self.eps = eps
        self.theta = theta
        self.rope_scaling = rope_scaling

    @staticmethod
    def from_hf(cfg):
        style = "olmo2" if cfg["model_type"] == "olmo2" else "llama"
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        return Arch(style, cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                    head_dim, cfg["rms_norm_eps"], cfg["rope_theta"], cfg.get("rope_scaling"))

    @staticmethod
    def from_raven(cfg):
        return Arch(cfg["block_type"], cfg["n_embd"], cfg["n_heads"], cfg["num_key_value_heads"],
                    cfg["head_dim"], cfg["norm_eps"], cfg["rope_theta"], cfg.get("rope_scaling"))


# ----------------------------------------------------------------------------------------------
# Operators (METHOD 2.4)
# ----------------------------------------------------------------------------------------------

def rms_norm(x, weight, eps, style):
    """RMSNorm with the statistics in fp32.

    Llama (LlamaRMSNorm) casts back to the input dtype before the weight multiply;
    OLMo-2 (Olmo2RMSNorm) multiplies in fp32 and casts the product. Identical in fp32.
    """
    in_dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if style == "olmo2":
        return (weight * h).to(in_dtype)
    return weight * h.to(in_dtype)


def rope_inv_freq(arch):
    """inv_freq_i = theta^(-2i/d) in fp32, optionally rescaled by llama3 rope_scaling."""
    d = arch.head_dim
    exponents = torch.arange(0, d, 2, dtype=torch.int64).to(torch.float32) / d
    inv_freq = 1.0 / (arch.theta ** exponents)
    rs = arch.rope_scaling
    if rs:
        rope_type = rs.get("rope_type", rs.get("type"))
        assert rope_type == "llama3", f"unsupported rope_scaling {rs}"
        factor = rs["factor"]
        low_ff = rs["low_freq_factor"]
        high_ff = rs["high_freq_factor"]
        old_len = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_len / low_ff
        high_freq_wavelen = old_len / high_ff
        wavelen = 2 * math.pi / inv_freq
        # long wavelengths: divide by factor; short ones: keep; in between: blend.
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
        inv_freq = torch.where(medium, blended, scaled)
    return inv_freq


def rope_cos_sin(position_ids, inv_freq):
    """cos/sin tables [B, S, d] from concat(angle, angle), computed in fp32."""
    angles = position_ids.to(torch.float32)[..., None] * inv_freq[None, None, :]
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x: [B, H, S, d]; cos/sin: [B, S, d]."""
    cos = cos[:, None, :, :].to(x.dtype)
    sin = sin[:, None, :, :].to(x.dtype)
    return x * cos + rotate_half(x) * sin


def attend(q, k, v, allowed):
    """Softmax attention with scale 1/sqrt(d); K/V heads repeated for GQA (HF repeat_kv).

    q: [B, H, S, d]; k, v: [B, Hkv, Sk, d]; allowed: bool [B, 1, S, Sk] or None (all allowed).
    """
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)  # kv head j serves query heads j*g .. j*g+g-1
    v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(probs, v)


def causal_allowed(batch, seq, key_mask=None):
    """bool [B, 1, S, S]: causal, optionally hiding padded keys.

    A left-padded query has no visible real key; it is allowed to see itself so
    that its (ignored) output stays finite.
    """
    allowed = torch.ones(seq, seq, dtype=torch.bool).tril()[None, None].expand(batch, 1, seq, seq)
    if key_mask is not None:
        allowed = allowed & key_mask.bool()[:, None, None, :]
        allowed = allowed | torch.eye(seq, dtype=torch.bool)[None, None]
    return allowed


# ----------------------------------------------------------------------------------------------
# One transformer block, for either checkpoint layout
#
# A block is a dict of weight tensors:
#   attention: "Wqkv" (fused rows q,k,v; Raven) or "q","k","v" (HF); "o"
#   MLP:       "fc" (fused rows gate,up; Raven) or "gate","up" (HF); "down"
#   norms:     "norm1","norm2" (METHOD 2.3 meaning), optional "q_norm","k_norm" (OLMo-2)
# ----------------------------------------------------------------------------------------------

def project_qkv(x, blk, arch):
    nq = arch.n_heads * arch.head_dim
    nkv = arch.n_kv * arch.head_dim
    if "Wqkv" in blk:
        q, k, v = F.linear(x, blk["Wqkv"]).split([nq, nkv, nkv], dim=-1)
    else:
        q, k, v = F.linear(x, blk["q"]), F.linear(x, blk["k"]), F.linear(x, blk["v"])
    return q, k, v


def self_attention(x, blk, arch, cos, sin, allowed, cache):
    B, S, _ = x.shape
    q, k, v = project_qkv(x, blk, arch)
    if "q_norm" in blk:
        # OLMo-2: RMSNorm over the full projected q [n_h*d] and k [n_kv*d], before reshape and RoPE.
        q = rms_norm(q, blk["q_norm"], arch.eps, arch.style)
        k = rms_norm(k, blk["k_norm"], arch.eps, arch.style)
    q = q.view(B, S, arch.n_heads, arch.head_dim).transpose(1, 2)
    k = k.view(B, S, arch.n_kv, arch.head_dim).transpose(1, 2)
    v = v.view(B, S, arch.n_kv, arch.head_dim).transpose(1, 2)
    q = apply_rope(q, cos, sin)
    k = apply_rope(k, cos, sin)
    if cache is not None:
        if "k" in cache:
            k = torch.cat([cache["k"], k], dim=2)
            v = torch.cat([cache["v"], v], dim=2)
        cache["k"], cache["v"] = k, v
    out = attend(q, k, v, allowed)
    out = out.transpose(1, 2).reshape(B, S, arch.n_heads * arch.head_dim)
    return F.linear(out, blk["o"])


def swiglu_mlp(x, blk):
    if "fc" in blk:
        gate, up = F.linear(x, blk["fc"]).chunk(2, dim=-1)
    else:
        gate, up = F.linear(x, blk["gate"]), F.linear(x, blk["up"])
    return F.linear(F.silu(gate) * up, blk["down"])


def block_forward(x, blk, arch, cos, sin, allowed, cache=None):
    if arch.style == "llama":
        # pre-norm: x + Attn(norm_1(x)); x + MLP(norm_2(x))
        x = x + self_attention(rms_norm(x, blk["norm1"], arch.eps, arch.style), blk, arch, cos, sin, allowed, cache)
        x = x + swiglu_mlp(rms_norm(x, blk["norm2"], arch.eps, arch.style), blk)
    else:
        # OLMo-2: norm on each sub-layer's output
        x = x + rms_norm(self_attention(x, blk, arch, cos, sin, allowed, cache), blk["norm1"], arch.eps, arch.style)
        x = x + rms_norm(swiglu_mlp(x, blk), blk["norm2"], arch.eps, arch.style)
    return x


# ----------------------------------------------------------------------------------------------
# Hugging Face checkpoint layout (Llama / OLMo-2)
# ----------------------------------------------------------------------------------------------

def hf_block(W, i, arch):
    p = f"model.layers.{i}."
    blk = {
        "q": W[p + "self_attn.q_proj.weight"], "k": W[p + "self_attn.k_proj.weight"],
        "v": W[p + "self_attn.v_proj.weight"], "o": W[p + "self_attn.o_proj.weight"],
        "gate": W[p + "mlp.gate_proj.weight"], "up": W[p + "mlp.up_proj.weight"],
        "down": W[p + "mlp.down_proj.weight"],
    }
    if arch.style == "llama":
        blk["norm1"] = W[p + "input_layernorm.weight"]
        blk["norm2"] = W[p + "post_attention_layernorm.weight"]
    else:
        blk["norm1"] = W[p + "post_attention_layernorm.weight"]
        blk["norm2"] = W[p + "post_feedforward_layernorm.weight"]
        blk["q_norm"] = W[p + "self_attn.q_norm.weight"]
        blk["k_norm"] = W[p + "self_attn.k_norm.weight"]
    return blk


def hf_lm_head(W, cfg):
    return W["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else W["lm_head.weight"]


def hf_position_ids(attention_mask):
    """HF generate(): cumsum(mask) - 1, pads filled with 1."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def hf_forward(W, cfg, input_ids, attention_mask=None, layers=None):
    """Full causal forward of an HF Llama/OLMo-2 model; returns fp32 logits [B, S, V].

    layers: optional list of layer indices to run (the METHOD 2.8 "removed layers skipped" model).
    """
    arch = Arch.from_hf(cfg)
    B, S = input_ids.shape
    if layers is None:
        layers = list(range(cfg["num_hidden_layers"]))
    if attention_mask is None:
        position_ids = torch.arange(S)[None].expand(B, S)
        allowed = causal_allowed(B, S)
    else:
        position_ids = hf_position_ids(attention_mask)
        allowed = causal_allowed(B, S, attention_mask)
    cos, sin = rope_cos_sin(position_ids, rope_inv_freq(arch))
    x = F.embedding(input_ids, W["model.embed_tokens.weight"])
    for i in layers:
        x = block_forward(x, hf_block(W, i, arch), arch, cos, sin, allowed)
    x = rms_norm(x, W["model.norm.weight"], arch.eps, arch.style)
    return F.linear(x, hf_lm_head(W, cfg)).float()


def hf_decode_with_cache(W, cfg, input_ids):
    """Feed tokens one at a time through a per-layer KV cache; returns logits [B, S, V]."""
    arch = Arch.from_hf(cfg)
    B, S = input_ids.shape
    inv_freq = rope_inv_freq(arch)
    caches = [dict() for _ in range(cfg["num_hidden_layers"])]
    outs = []
    for t in range(S):
        cos, sin = rope_cos_sin(torch.full((B, 1), t, dtype=torch.long), inv_freq)
        x = F.embedding(input_ids[:, t:t + 1], W["model.embed_tokens.weight"])
        for i in range(cfg["num_hidden_layers"]):
            x = block_forward(x, hf_block(W, i, arch), arch, cos, sin, None, caches[i])
        x = rms_norm(x, W["model.norm.weight"], arch.eps, arch.style)
        outs.append(F.linear(x, hf_lm_head(W, cfg)).float())
    return torch.cat(outs, dim=1)


# ----------------------------------------------------------------------------------------------
# Raven / Huginn checkpoint layout (retrofitted recurrent model)
# ----------------------------------------------------------------------------------------------

def raven_block(W, section, j, arch):
    p = f"transformer.{section}.{j}."
    blk = {
        "Wqkv": W[p + "attn.Wqkv.weight"], "o": W[p + "attn.proj.weight"],
        "fc": W[p + "mlp.fc.weight"], "down": W[p + "mlp.proj.weight"],
        "norm1": W[p + "norm_1.weight"], "norm2": W[p + "norm_2.weight"],
    }
    if arch.style == "olmo2":
        blk["q_norm"] = W[p + "attn.q_norm.weight"]
        blk["k_norm"] = W[p + "attn.k_norm.weight"]
    return blk


def raven_forward(W, cfg, input_ids, s0, T, caches=None, position_offset=0):
    """METHOD 2.1:  e = P(Embed(x)); s_i = R(A(cat[s_{i-1}, e])) for i=1..T; y = head(ln_f(C(s_T))).

    s0 is given explicitly ([B, S, h]). With `caches` (a list, extended on first use)
    every unrolled layer application owns one slot (METHOD 7.2), numbered
    0..p+r*T+c-1 in execution order, and the tokens sit at positions
    position_offset .. position_offset+S-1.
    """
    arch = Arch.from_raven(cfg)
    B, S = input_ids.shape
    p, r, c = cfg["n_layers_in_prelude"], cfg["n_layers_in_recurrent_block"], cfg["n_layers_in_coda"]
    position_ids = (torch.arange(S) + position_offset)[None].expand(B, S)
    cos, sin = rope_cos_sin(position_ids, rope_inv_freq(arch))
    allowed = causal_allowed(B, S) if S > 1 else None
    if caches is not None:
        assert S == 1 or position_offset == 0, "multi-token steps only as a prefill"
        while len(caches) < p + r * T + c:
            caches.append(dict())
    slot = [0]

    def run(x, section, j):
        cache = None
        if caches is not None:
            cache = caches[slot[0]]
            slot[0] += 1
        return block_forward(x, raven_block(W, section, j, arch), arch, cos, sin, allowed, cache)

    x = F.embedding(input_ids, W["transformer.wte.weight"])  # embed_scale 1.0: no scaling
    for j in range(p):
        x = run(x, "prelude", j)
    e = x
    s = s0
    for _ in range(T):
        s = F.linear(torch.cat([s, e], dim=-1), W["transformer.adapter.weight"])  # state FIRST
        for j in range(r):
            s = run(s, "core_block", j)
    for j in range(c):
        s = run(s, "coda", j)
    s = rms_norm(s, W["transformer.ln_f.weight"], arch.eps, arch.style)  # ln_f once, after the coda
    return F.linear(s, W["lm_head.weight"]).float()


def raven_decode_with_cache(W, cfg, input_ids, s0, T):
    """Token-by-token decoding with one cache slot per layer application; s0[:, t] feeds token t."""
    caches = []
    outs = []
    for t in range(input_ids.shape[1]):
        outs.append(raven_forward(W, cfg, input_ids[:, t:t + 1], s0[:, t:t + 1], T, caches, position_offset=t))
    return torch.cat(outs, dim=1)


def hf_to_raven(W, cfg, prelude, core, coda):
    """METHOD 2.8 conversion: copy mapped layers, fuse q/k/v and gate/up, copy wte/ln_f/head.

    The adapter is not created here (it keeps its own initialisation).
    """
    arch = Arch.from_hf(cfg)
    R = {
        "transformer.wte.weight": W["model.embed_tokens.weight"].clone(),
        "transformer.ln_f.weight": W["model.norm.weight"].clone(),
        "lm_head.weight": hf_lm_head(W, cfg).clone(),  # always untied
    }
    for section, idxs in (("prelude", prelude), ("core_block", core), ("coda", coda)):
        for j, i in enumerate(idxs):
            b = hf_block(W, i, arch)
            q = f"transformer.{section}.{j}."
            R[q + "attn.Wqkv.weight"] = torch.cat([b["q"], b["k"], b["v"]], dim=0).contiguous()
            R[q + "attn.proj.weight"] = b["o"].clone()
            R[q + "mlp.fc.weight"] = torch.cat([b["gate"], b["up"]], dim=0).contiguous()
            R[q + "mlp.proj.weight"] = b["down"].clone()
            R[q + "norm_1.weight"] = b["norm1"].clone()
            R[q + "norm_2.weight"] = b["norm2"].clone()
            if arch.style == "olmo2":
                R[q + "attn.q_norm.weight"] = b["q_norm"].clone()
                R[q + "attn.k_norm.weight"] = b["k_norm"].clone()
    return R


# ----------------------------------------------------------------------------------------------
# Random tiny models
# ----------------------------------------------------------------------------------------------

LINEAR_STD = 0.08
EMBED_STD = 0.1


def hf_config(model_type, *, layers, intermediate, vocab, tied, theta, eps, rope_scaling=None,
              dtype="float32", hidden=64, heads=4, kv=2, head_dim=16, max_pos=256):
    cfg = {
        "model_type": model_type,
        "architectures": ["LlamaForCausalLM" if model_type == "llama" else "Olmo2ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": max_pos,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": dtype,
    }
    if model_type == "llama":
        cfg["mlp_bias"] = False
        cfg["pretraining_tp"] = 1
    return cfg


def make_hf_weights(cfg, seed):
    g = torch.Generator().manual_seed(seed)
    h, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nq = cfg["num_attention_heads"] * cfg["head_dim"]
    nkv = cfg["num_key_value_heads"] * cfg["head_dim"]

    def lin(rows, cols):
        return torch.randn(rows, cols, generator=g) * LINEAR_STD

    def nrm(n):
        return 1.0 + 0.1 * torch.randn(n, generator=g)

    W = {"model.embed_tokens.weight": torch.randn(V, h, generator=g) * EMBED_STD}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        W[p + "self_attn.q_proj.weight"] = lin(nq, h)
        W[p + "self_attn.k_proj.weight"] = lin(nkv, h)
        W[p + "self_attn.v_proj.weight"] = lin(nkv, h)
        W[p + "self_attn.o_proj.weight"] = lin(h, nq)
        W[p + "mlp.gate_proj.weight"] = lin(I, h)
        W[p + "mlp.up_proj.weight"] = lin(I, h)
        W[p + "mlp.down_proj.weight"] = lin(h, I)
        if cfg["model_type"] == "llama":
            W[p + "input_layernorm.weight"] = nrm(h)
            W[p + "post_attention_layernorm.weight"] = nrm(h)
        else:
            W[p + "post_attention_layernorm.weight"] = nrm(h)
            W[p + "post_feedforward_layernorm.weight"] = nrm(h)
            W[p + "self_attn.q_norm.weight"] = nrm(nq)
            W[p + "self_attn.k_norm.weight"] = nrm(nkv)
    W["model.norm.weight"] = nrm(h)
    if not cfg["tie_word_embeddings"]:
        W["lm_head.weight"] = lin(V, h)
    return W


def parity_inputs(V, seed, batch=2, seq=12, pad=4):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (batch, seq), generator=g)
    pad_ids = ids.clone()
    pad_ids[1] = torch.cat([torch.zeros(pad, dtype=torch.long), ids[1, :seq - pad]])
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, :pad] = 0
    return ids, pad_ids, mask


HF_MODELS = [
    # name, config kwargs, weight seed
    ("llama-gqa", dict(model_type="llama", layers=3, intermediate=96, vocab=97, tied=False,
                       theta=10000.0, eps=1e-5), 1001),
    ("llama-tied", dict(model_type="llama", layers=2, intermediate=80, vocab=128, tied=True,
                        theta=10000.0, eps=1e-5), 1002),
    # original_max_position_embeddings 64 with head_dim 16 and theta 5e5 puts inv_freq[0] in the
    # high-frequency band (kept), inv_freq[1] in the blended band and inv_freq[2..7] in the
    # low-frequency band (divided by the factor).
    ("llama3-rope", dict(model_type="llama", layers=2, intermediate=80, vocab=128, tied=False,
                         theta=500000.0, eps=1e-5,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
     1003),
    ("olmo2", dict(model_type="olmo2", layers=2, intermediate=80, vocab=128, tied=False,
                   theta=500000.0, eps=1e-6), 1004),
    ("llama-bf16", dict(model_type="llama", layers=2, intermediate=96, vocab=128, tied=False,
                        theta=10000.0, eps=1e-5, dtype="bfloat16"), 1005),
]


def make_hf_fixtures():
    print("HF models")
    for idx, (name, kw, seed) in enumerate(HF_MODELS):
        cfg = hf_config(**kw)
        W = make_hf_weights(cfg, seed)
        if cfg["torch_dtype"] == "bfloat16":
            stored = {k: v.to(torch.bfloat16) for k, v in W.items()}
            W = {k: v.to(torch.float32) for k, v in stored.items()}  # reference uses the rounded weights
        else:
            stored = W
        mdir = os.path.join(FIX, "models", name)
        write_json(os.path.join(mdir, "config.json"), cfg)
        save_tensors(os.path.join(mdir, "model.safetensors"), stored)

        ids, pad_ids, mask = parity_inputs(cfg["vocab_size"], 2000 + idx)
        logits = hf_forward(W, cfg, ids)
        pad_logits = hf_forward(W, cfg, pad_ids, mask)
        pad_logits = pad_logits * mask[..., None].to(pad_logits.dtype)  # pad positions are meaningless: zeroed
        check_close(f"{name} padded row 0 == unpadded row 0", pad_logits[0], logits[0], 1e-5)
        check_close(f"{name} padded row 1 real tokens == unpadded prefix", pad_logits[1, 4:], logits[1, :8], 1e-5)
        if name == "llama-gqa":
            check_close(f"{name} KV-cache decode == full forward", hf_decode_with_cache(W, cfg, ids), logits, 1e-5)
        arch = Arch.from_hf(cfg)
        save_tensors(os.path.join(FIX, "parity", f"{name}.safetensors"), {
            "input_ids": ids,
            "logits": logits,
            "pad_input_ids": pad_ids,
            "pad_attention_mask": mask,
            "pad_position_ids": hf_position_ids(mask),
            "pad_logits": pad_logits,
            "rope_inv_freq": rope_inv_freq(arch),
        }, {"model": f"models/{name}"})


# ----------------------------------------------------------------------------------------------
# Recurrent (Raven layout) models
# ----------------------------------------------------------------------------------------------

def raven_config(block_type, src_cfg, p, r, c):
    return {
        "model_type": "huginn_raven",
        "architectures": ["RavenForCausalLM"],
        "block_type": block_type,
        "n_embd": src_cfg["hidden_size"],
        "n_heads": src_cfg["num_attention_heads"],
        "num_key_value_heads": src_cfg["num_key_value_heads"],
        "head_dim": src_cfg["head_dim"],
        "intermediate_size": src_cfg["intermediate_size"],
        "n_layers": p + r + c,
        "n_layers_in_prelude": p,
        "n_layers_in_recurrent_block": r,
        "n_layers_in_coda": c,
        "norm_eps": src_cfg["rms_norm_eps"],
        "vocab_size": src_cfg["vocab_size"],
        "padded_vocab_size": src_cfg["vocab_size"],
        "rope_theta": src_cfg["rope_theta"],
        "rope_scaling": src_cfg["rope_scaling"],
        "rope_base": 500000,
        "max_position_embeddings": src_cfg["max_position_embeddings"],
        "tie_embeddings": False,
        "qk_bias": False,
        "bias": False,
        "torch_dtype": "float32",
        "init_values": {"std": HUGINN_STD, "embed_scale": 1.0},
        "mean_recurrence": 32,
        "mean_backprop_depth": 8,
        "sampling_scheme": "poisson-lognormal-filling",
        "injection_type": "linear",
        "state_init": "like-init",
        "block_size": src_cfg["max_position_embeddings"],
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


RECURRENT_MODELS = [
    # name, block type, source HF config kwargs (6 layers), seed, (prelude, core, coda) source layers
    ("recurrent-llama", "llama", dict(model_type="llama", layers=6, intermediate=80, vocab=128, tied=False,
                                      theta=10000.0, eps=1e-5), 3001),
    ("recurrent-olmo2", "olmo2", dict(model_type="olmo2", layers=6, intermediate=80, vocab=128, tied=False,
                                      theta=500000.0, eps=1e-6), 3002),
]
# (p, r, c) = (1, 2, 1): prelude <- layer 0, core <- layers 3,4, coda <- layer 5; layers 1,2 removed.
MAP_PRELUDE, MAP_CORE, MAP_CODA = [0], [3, 4], [5]


def make_recurrent_fixtures():
    print("Recurrent models")
    for idx, (name, block_type, kw, seed) in enumerate(RECURRENT_MODELS):
        src_cfg = hf_config(**kw)
        src_W = make_hf_weights(src_cfg, seed)
        cfg = raven_config(block_type, src_cfg, len(MAP_PRELUDE), len(MAP_CORE), len(MAP_CODA))
        h = cfg["n_embd"]
        R = hf_to_raven(src_W, src_cfg, MAP_PRELUDE, MAP_CORE, MAP_CODA)

        # METHOD 2.8 equivalence: T=1, s0=0, adapter [0 | I] reproduces the HF model on the kept layers.
        g = torch.Generator().manual_seed(seed + 100)
        ids = torch.randint(3, cfg["vocab_size"], (2, 10), generator=g)
        R_id = dict(R)
        R_id["transformer.adapter.weight"] = torch.cat([torch.zeros(h, h), torch.eye(h)], dim=1)
        rec = raven_forward(R_id, cfg, ids, torch.zeros(2, 10, h), T=1)
        ref = hf_forward(src_W, src_cfg, ids, layers=MAP_PRELUDE + MAP_CORE + MAP_CODA)
        check_close(f"{name} T=1, [0|I] adapter, s0=0 == HF on kept layers", rec, ref, 1e-5)

        # Shipped model: adapter with PyTorch's default Linear init, U(+-1/sqrt(2h)) (METHOD 2.5).
        bound = 1.0 / math.sqrt(2 * h)
        R["transformer.adapter.weight"] = (torch.rand(h, 2 * h, generator=g) * 2 - 1) * bound
        s0 = torch.randn(2, 10, h, generator=g) * 0.5
        logits_t1 = raven_forward(R, cfg, ids, s0, T=1)
        logits_t3 = raven_forward(R, cfg, ids, s0, T=3)
        d13 = max_abs_diff(logits_t1, logits_t3)
        d_s0 = max_abs_diff(logits_t3, raven_forward(R, cfg, ids, torch.zeros_like(s0), T=3))
        assert d13 > 1e-3 and d_s0 > 1e-3, f"{name}: T or s0 has no visible effect ({d13}, {d_s0})"
        print(f"  ok  {name}: |logits_T1 - logits_T3| = {d13:.2e}, s0 effect at T=3 = {d_s0:.2e}")
        check_close(f"{name} per-application KV-cache decode (T=3) == full forward",
                    raven_decode_with_cache(R, cfg, ids, s0, T=3), logits_t3, 1e-5)

        mdir = os.path.join(FIX, "models", name)
        write_json(os.path.join(mdir, "config.json"), cfg)
        save_tensors(os.path.join(mdir, "model.safetensors"), R)
        save_tensors(os.path.join(FIX, "parity", f"{name}.safetensors"), {
            "input_ids": ids,
            "s0": s0,
            "logits_T1": logits_t1,
            "logits_T3": logits_t3,
        }, {"model": f"models/{name}"})


# ----------------------------------------------------------------------------------------------
# Muon (METHOD 4.4; KellerJordan/Muon:muon.py)
# ----------------------------------------------------------------------------------------------

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(G, dtype=torch.bfloat16, steps=5):
    """Quintic Newton-Schulz orthogonalisation.

    Every intermediate is in `dtype` (bf16 for Muon). Python evaluates
    `c * A @ A` left to right, so the quintic term is (c*A) @ A.
    """
    a, b, c = NS_COEFFS
    X = G.to(dtype)
    transposed = G.shape[0] > G.shape[1]
    if transposed:
        X = X.T
    X = X / (X.norm() + 1e-7)  # Frobenius norm
    for _ in range(steps):
        A = X @ X.T
        B = b * A + (c * A) @ A
        X = a * X + B @ X
    if transposed:
        X = X.T
    return X


def muon_step(p, grad, momentum, lr, wd, beta=0.95):
    """One Muon step on fp32 `p` (returns new p, new momentum, the scaled update O).

    m <- lerp(m, g, 1-beta) = beta*m + (1-beta)*g
    u <- lerp(g, m, beta)   = beta*m + (1-beta)*g      (Nesterov)
    O <- NS5_bf16(u) * sqrt(max(1, rows/cols))        (the scale multiply happens in bf16)
    p <- p*(1 - lr*wd) - lr*O
    """
    momentum = momentum.clone().lerp_(grad, 1 - beta)
    update = grad.clone().lerp_(momentum, beta)
    O = newton_schulz5(update)
    O = O * (max(1, grad.shape[0] / grad.shape[1]) ** 0.5)
    p = p.clone()
    p.mul_(1 - lr * wd)
    p.add_(O.reshape(p.shape), alpha=-lr)
    return p, momentum, O


def make_muon_fixture():
    print("Muon")
    g = torch.Generator().manual_seed(4001)
    lr, wd, beta = 0.02, 0.1, 0.95
    out = {
        "lr": torch.tensor([lr], dtype=torch.float32),
        "weight_decay": torch.tensor([wd], dtype=torch.float32),
        "momentum": torch.tensor([beta], dtype=torch.float32),
    }
    for tag, shape in (("a", (48, 32)), ("b", (32, 80))):
        W0 = torch.randn(*shape, generator=g) * 0.05
        g1 = torch.randn(*shape, generator=g) * 0.01
        g2 = torch.randn(*shape, generator=g) * 0.01
        m0 = torch.zeros(shape)
        W1, m1, O1 = muon_step(W0, g1, m0, lr, wd, beta)
        W2, m2, O2 = muon_step(W1, g2, m1, lr, wd, beta)
        assert max_abs_diff(W1, W0) > 1e-4 and max_abs_diff(W2, W1) > 1e-4
        out.update({f"{tag}.W0": W0, f"{tag}.g1": g1, f"{tag}.g2": g2,
                    f"{tag}.W1": W1, f"{tag}.W2": W2,
                    f"{tag}.m1": m1, f"{tag}.m2": m2,
                    f"{tag}.O1": O1.float(), f"{tag}.O2": O2.float()})
    X = torch.randn(40, 24, generator=g)
    Y = newton_schulz5(X)
    sv = torch.linalg.svdvals(Y.float())
    # the quintic does not converge to 1: it settles in a band of roughly [0.7, 1.2] (bf16 widens it a little)
    assert sv.min() >= 0.6 and sv.max() <= 1.25, f"NS5 singular values out of range: {sv.min()}, {sv.max()}"
    print(f"  ok  NS5 bf16 singular values in [{sv.min():.3f}, {sv.max():.3f}]")
    out["ns5_input"] = X
    out["ns5_output"] = Y.float()                          # bf16 values, stored exactly as F32
    out["ns5_output_fp32"] = newton_schulz5(X, dtype=torch.float32)  # same algorithm, fp32 throughout
    save_tensors(os.path.join(FIX, "training", "muon_step.safetensors"), out,
                 {"lr": repr(lr), "weight_decay": repr(wd), "momentum": repr(beta), "nesterov": "true",
                  "ns_coeffs": json.dumps(NS_COEFFS), "ns_steps": "5", "ns_dtype": "bfloat16"})


# ----------------------------------------------------------------------------------------------
# AdamW (torch.optim.AdamW; METHOD 4.3 auxiliary group semantics)
# ----------------------------------------------------------------------------------------------

def aux_adam_reference(p0, grads, lr, betas, eps, wd):
    """Transcription of the auxiliary Adam inside KellerJordan/Muon MuonWithAuxAdam, used only to
    confirm it equals torch.optim.AdamW up to fp32 rounding."""
    p = p0.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for step, gr in enumerate(grads, start=1):
        m.lerp_(gr, 1 - betas[0])
        v.lerp_(gr.square(), 1 - betas[1])
        upd = (m / (1 - betas[0] ** step)) / ((v / (1 - betas[1] ** step)).sqrt() + eps)
        p.mul_(1 - lr * wd)
        p.add_(upd, alpha=-lr)
    return p


def make_adamw_fixture():
    print("AdamW")
    g = torch.Generator().manual_seed(4002)
    lr, betas, eps, wd = 5e-5 * 100, (0.9, 0.95), 1e-10, 1e-4
    p0 = torch.randn(16, 8, generator=g) * 0.5
    g1 = torch.randn(16, 8, generator=g) * 0.1
    g2 = torch.randn(16, 8, generator=g) * 0.1
    param = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([param], lr=lr, betas=betas, eps=eps, weight_decay=wd,
                            amsgrad=False, maximize=False, foreach=False)
    snapshots = []
    for gr in (g1, g2):
        param.grad = gr.clone()
        opt.step()
        snapshots.append(param.detach().clone())
    state = opt.state[param]
    check_close("AdamW == Muon's auxiliary Adam transcription (2 steps)",
                aux_adam_reference(p0, [g1, g2], lr, betas, eps, wd), snapshots[1], 1e-6)
    save_tensors(os.path.join(FIX, "training", "adamw_step.safetensors"), {
        "p0": p0, "g1": g1, "g2": g2, "p1": snapshots[0], "p2": snapshots[1],
        "exp_avg_2": state["exp_avg"].clone(), "exp_avg_sq_2": state["exp_avg_sq"].clone(),
        "lr": torch.tensor([lr], dtype=torch.float32),
        "betas": torch.tensor(betas, dtype=torch.float32),
        "eps": torch.tensor([eps], dtype=torch.float32),
        "weight_decay": torch.tensor([wd], dtype=torch.float32),
    }, {"lr": repr(lr), "betas": json.dumps(betas), "eps": repr(eps), "weight_decay": repr(wd),
        "optimizer": "torch.optim.AdamW(foreach=False, amsgrad=False)", "torch_version": torch.__version__})


# ----------------------------------------------------------------------------------------------
# Depth sampler (METHOD 3.1; mcleish7/retrofitting-recurrence:train.py num_steps_sampler and
# sheduler_n_k_handler)
# ----------------------------------------------------------------------------------------------

def sample_n_k(data_step, mean_recurrence, mean_backprop_depth=8):
    # sheduler_n_k_handler: a scheduled mean <= 0 becomes 1; below the backprop depth the depth is capped.
    mean_recurrence = max(mean_recurrence, 1)
    s = mean_backprop_depth if mean_recurrence - mean_backprop_depth >= 0 else mean_recurrence
    t = max(mean_recurrence - s, 0)
    seed_n = (514229 + data_step) % (2 ** 31 - 1)
    seed_k = (317811 + data_step) % (2 ** 31 - 1)
    n_gen = torch.Generator(device="cpu")
    n_gen.manual_seed(seed_n)
    k_gen = torch.Generator(device="cpu")  # seeded, never drawn from
    k_gen.manual_seed(seed_k)
    sigma = 0.5
    mu = math.log(t + s) - (sigma ** 2 / 2)
    rate = torch.zeros((1,)).log_normal_(mean=mu, std=sigma, generator=n_gen)  # float32 [1]
    p = torch.poisson(torch.tensor([rate], dtype=torch.float), generator=n_gen) + 1  # float32 [1]
    n = torch.clamp(p - s, min=0)
    k = torch.as_tensor(torch.minimum(torch.as_tensor(s), p))
    lam = float(rate.item())
    return {
        "mean_recurrence": mean_recurrence, "data_step": data_step,
        "backprop_depth_s": s, "t": t, "seed_n": seed_n, "seed_k": seed_k,
        "lognormal_mean_mu": mu, "sigma": sigma,
        "lambda": lam, "lambda_f32_hex": rate.view(torch.int32).item().to_bytes(4, "big", signed=True).hex(),
        "p": int(p.item()), "n": int(n.long().item()), "k": int(k.long().item()),
    }


def make_sampler_fixture():
    print("Depth sampler")
    samples = []
    for mean_rec in (1, 2, 4, 8, 16, 32):
        for data_step in (1, 2, 3, 100, 12345):
            r = sample_n_k(data_step, mean_rec)
            assert r["n"] + r["k"] == r["p"] and r["k"] <= r["backprop_depth_s"]
            samples.append(r)
    doc = {
        "source": "mcleish7/retrofitting-recurrence:train.py num_steps_sampler + sheduler_n_k_handler (METHOD 3.1)",
        "torch_version": torch.__version__,
        "mean_backprop_depth": 8,
        "sigma": 0.5,
        "procedure": [
            "mean_recurrence = max(mean_recurrence, 1)",
            "s = mean_backprop_depth if mean_recurrence - mean_backprop_depth >= 0 else mean_recurrence",
            "t = max(mean_recurrence - s, 0)",
            "n_gen = torch.Generator(device='cpu'); n_gen.manual_seed((514229 + data_step) % (2**31 - 1))",
            "k_gen = torch.Generator(device='cpu'); k_gen.manual_seed((317811 + data_step) % (2**31 - 1))  # unused",
            "mu = math.log(t + s) - 0.5**2 / 2   # python double",
            "rate = torch.zeros((1,)).log_normal_(mean=mu, std=0.5, generator=n_gen)   # float32, shape [1]",
            "p = torch.poisson(torch.tensor([rate], dtype=torch.float), generator=n_gen) + 1   # float32 [1]",
            "n = torch.clamp(p - s, min=0).long()",
            "k = torch.minimum(torch.as_tensor(s), p).long()",
        ],
        "notes": "Both draws use the first generator, log-normal first, then Poisson. "
                 "lambda is the float32 log-normal draw (lambda_f32_hex = its IEEE bits, big-endian hex). "
                 "Draws come from the libtorch CPU generator (mt19937); TorchSharp binds the same kernels.",
        "samples": samples,
    }
    write_json(os.path.join(FIX, "training", "depth_sampler.json"), doc)
    print(f"  wrote {len(samples)} samples")


# ----------------------------------------------------------------------------------------------
# Schedules (METHOD 3.3 curriculum, 4.5 WSD) and FLOPs (METHOD 6)
# ----------------------------------------------------------------------------------------------

def wsd_factor(t, warmup_steps, stable_steps, decay_steps, min_lr_ratio, warmup_type="linear"):
    """Learning-rate factor of HF get_wsd_schedule (cosine decay, num_cycles 0.5)."""
    if t < warmup_steps:
        progress = float(t) / float(max(1, warmup_steps))
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "1-sqrt":
            factor = 1.0 - math.sqrt(1.0 - progress)
        else:
            raise ValueError(warmup_type)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    if t < warmup_steps + stable_steps:
        return 1.0
    if t < warmup_steps + stable_steps + decay_steps:
        progress = float(t - warmup_steps - stable_steps) / float(max(1, decay_steps))
        factor = 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress))
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    return min_lr_ratio


def curriculum_values(r_max, total_steps, warmup_frac, warmup_type):
    """mu_rec(t): R_max * WSD factor (no decay, min ratio 0), ceil, then <=0 -> 1."""
    W = math.ceil(warmup_frac * total_steps)
    rows = []
    for t in range(total_steps):
        raw = float(r_max) * wsd_factor(t, W, total_steps - W, 0, 0.0, warmup_type)
        mu = math.ceil(raw)
        if mu <= 0:
            mu = 1
        rows.append({"t": t, "raw": raw, "mean_recurrence": mu})
    return W, rows


def make_schedule_fixtures():
    print("Schedules")
    curricula = []
    for r_max, total, frac, kind in ((32, 100, 0.75, "1-sqrt"), (4, 40, 0.25, "linear")):
        W, rows = curriculum_values(r_max, total, frac, kind)
        assert rows[0]["mean_recurrence"] == 1 and rows[-1]["mean_recurrence"] == r_max
        curricula.append({"r_max": r_max, "total_steps": total, "warmup_frac": frac, "warmup_type": kind,
                          "warmup_steps": W, "values": [r["mean_recurrence"] for r in rows],
                          "raw": [r["raw"] for r in rows]})
    S, warm, cool, m = 100, 0.0025, 0.6, 0.001
    W, D = math.ceil(warm * S), math.ceil(cool * S)
    stable = S - W - D
    wsd = {"total_steps": S, "warmup_frac": warm, "cooldown_frac": cool, "min_lr_ratio": m,
           "warmup_steps": W, "stable_steps": stable, "decay_steps": D,
           "t": list(range(S + 1)), "factor": [wsd_factor(t, W, stable, D, m) for t in range(S + 1)]}
    doc = {
        "source": "METHOD 3.3 (curriculum through HF warmup_stable_decay, num_decay_steps 0, min_lr_ratio 0) "
                  "and METHOD 4.5 (huggingface/transformers:src/transformers/optimization.py get_wsd_schedule)",
        "curriculum_notes": "t = optimizer steps already taken (0-based), t in [0, total_steps). "
                            "W = ceil(warmup_frac*total); raw = R_max * f(t/W) for t < W else R_max, "
                            "linear f(u) = u, 1-sqrt f(u) = 1 - sqrt(1 - u); value = ceil(raw), <= 0 -> 1. Doubles.",
        "wsd_notes": "factor for t in [0, S]: t < W: (t/W)(1-m)+m; stable: 1; decay: m+(1-m)*0.5*(1+cos(pi*q)), "
                     "q = (t-W-stable)/D; t >= S: m. W = ceil(warmup*S), D = ceil(cooldown*S), stable = S-W-D.",
        "curricula": curricula,
        "wsd": wsd,
    }
    write_json(os.path.join(FIX, "training", "curriculum.json"), doc)
    make_flops_fixture(curricula)


def flops_per_token(n_layer, p, r, c, R, cap=8):
    n1 = p * n_layer + min(R, cap) * r * n_layer + c * n_layer
    n2 = max(R - cap, 0) * r * n_layer
    return 6 * n1 + 2 * n2


def make_flops_fixture(curricula):
    n_layer, (p, r, c), tokens = 44044288, (4, 8, 4), 2 ** 20  # TinyLlama per-layer count, METHOD 2.6
    finv = {"linear": lambda y: y, "1-sqrt": lambda y: 1.0 - (1.0 - y) ** 2}
    runs = []
    for cur in curricula:
        R_max, total, W = cur["r_max"], cur["total_steps"], cur["warmup_steps"]
        direct = tokens * sum(flops_per_token(n_layer, p, r, c, mu) for mu in cur["values"])
        counts = {}
        for rr in range(1, R_max + 1):
            lo = math.floor(finv[cur["warmup_type"]]((rr - 1) / R_max) * W)
            hi = math.floor(finv[cur["warmup_type"]](rr / R_max) * W)
            counts[rr] = hi - lo
        counts[R_max] += total - W
        hist = tokens * sum(cnt * flops_per_token(n_layer, p, r, c, rr) for rr, cnt in counts.items())
        runs.append({"r_max": R_max, "total_steps": total, "warmup_type": cur["warmup_type"],
                     "warmup_steps": W, "total_flops_direct": str(direct), "total_flops_histogram": str(hist),
                     "histogram_step_counts": [counts[rr] for rr in range(1, R_max + 1)]})
    doc = {
        "source": "METHOD 6 (mcleish7/retrofitting-recurrence:param_counter.py as summarised there)",
        "n_layer_params": n_layer, "p": p, "r": r, "c": c, "tokens_per_step": tokens, "backprop_cap": 8,
        "per_token_notes": "N1 = (p + min(R,8)*r + c)*N_layer; N2 = max(R-8,0)*r*N_layer; flops = 6*N1 + 2*N2",
        "flops_per_token": {str(R): flops_per_token(n_layer, p, r, c, R) for R in range(1, 33)},
        "total_notes": "direct = tokens * sum_t flops(mu_rec(t)) over the curricula of curriculum.json; "
                       "histogram = RR's count: steps in [floor(finv((R-1)/Rmax)*W), floor(finv(R/Rmax)*W)) "
                       "at R, plus total-W steps at Rmax; finv linear y, 1-sqrt 1-(1-y)^2. "
                       "Totals are exact integers written as decimal strings.",
        "runs": runs,
        "baseline_flops_per_token_22_layers": 6 * 22 * n_layer,
    }
    write_json(os.path.join(FIX, "training", "flops.json"), doc)


# ----------------------------------------------------------------------------------------------

def main():
    make_hf_fixtures()
    make_recurrent_fixtures()
    make_muon_fixture()
    make_adamw_fixture()
    make_sampler_fixture()
    make_schedule_fixtures()
    total = 0
    for root, _, files in os.walk(FIX):
        for f in sorted(files):
            total += os.path.getsize(os.path.join(root, f))
    print(f"fixtures written under {FIX} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
