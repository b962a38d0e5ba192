"""Forward pass of a Recur recurrent model (Raven/Huginn layout) for Hugging Face `trust_remote_code`.

Written by Recur into every recurrent model folder it saves. The model (arXiv 2511.07384):

    e   = prelude(embed(x) * embed_scale)
    s_0 ~ TruncNormal(0, std^2, +-3 std) * embed_scale         (or `input_states`)
    s_i = core(adapter(concat[s_{i-1}, e]))   for i = 1..T      (state first)
    y   = lm_head(ln_f(coda(s_T)))

Blocks are Llama (pre-norm: x + attn(norm_1(x)), x + mlp(norm_2(x))), OLMo-2 (x + norm_1(attn(x)),
x + norm_2(mlp(x)), q/k RMSNorm over the full projections before RoPE) or Huginn-0125's "sandwich"
(norm_2(x + attn(norm_1(x))), norm_4(x + mlp(norm_3(x))), RoPE on interleaved pairs from the `freqs_cis`
buffer, ln_f also before the coda), chosen by the config's `block_type`. Attention uses the fused `Wqkv` (rows q, k, v), HF "rotate_half" RoPE and GQA; the MLP
is SwiGLU on the fused `fc` (rows gate, up).

T is `num_steps` (an int, or (n, k) meaning n + k) and defaults to `mean_recurrence`.
Generation through `generate()` recomputes the whole sequence at every step (no KV cache here: a
recurrent model needs one cache entry per unrolled layer application); Recur's own `recur generate`
is the fast path. `labels` are compared position by position with the logits (no shift), as in the
paper's modeling files. `attention_mask` masks padded keys.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .raven_config_minimal import RavenConfig


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return h.to(x.dtype) * self.weight


def inverse_frequencies(config, device=None):
    d = config.head_dim
    inv = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
    scaling = getattr(config, "rope_scaling", None)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_len = scaling.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        smooth = (old_len / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv / factor + smooth * inv
        inv = torch.where(wavelen < old_len / high, inv, torch.where(wavelen > old_len / low, inv / factor, blended))
    return inv


def rotate_pairs(x, table):
    # Interleaved pairs (x[2i], x[2i+1]) turned by the angle whose (cos, sin) the table holds: [1, S, 1, d/2, 2].
    pairs = x.float().unflatten(-1, (-1, 2))
    c, s = table[..., 0], table[..., 1]
    out = torch.stack([pairs[..., 0] * c - pairs[..., 1] * s, pairs[..., 1] * c + pairs[..., 0] * s], dim=-1)
    return out.flatten(-2).to(x.dtype)


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + turned * sin


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads, self.kv_heads, self.d = config.n_heads, config.num_key_value_heads, config.head_dim
        self.olmo = config.block_type == "olmo2"
        self.pairs = config.block_type == "sandwich"
        self.Wqkv = nn.Linear(config.n_embd, (self.heads + 2 * self.kv_heads) * self.d, bias=False)
        self.proj = nn.Linear(self.heads * self.d, config.n_embd, bias=False)
        if self.olmo:
            self.q_norm = RMSNorm(self.heads * self.d, config.norm_eps)
            self.k_norm = RMSNorm(self.kv_heads * self.d, config.norm_eps)
        if config.qk_bias:
            self.qk_bias = nn.Parameter(torch.zeros(2, 1, self.heads, self.d))
        self.has_bias = config.qk_bias

    def forward(self, x, cos, sin, mask):
        b, s, _ = x.shape
        q, k, v = self.Wqkv(x).split([self.heads * self.d, self.kv_heads * self.d, self.kv_heads * self.d], dim=-1)
        if self.olmo:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, s, self.heads, self.d)
        k = k.view(b, s, self.kv_heads, self.d)
        v = v.view(b, s, self.kv_heads, self.d)
        if self.has_bias:
            q = q + self.qk_bias[0].to(q.dtype)
            k = k + self.qk_bias[1].to(k.dtype)
        if self.pairs:
            q, k = rotate_pairs(q, cos), rotate_pairs(k, cos)  # cos holds the freqs_cis rows here
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if not self.pairs:
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if self.kv_heads != self.heads:
            k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
            v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        # Plain softmax attention (also on PyTorch versions without scaled_dot_product_attention).
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(self.d)
        scores = scores.masked_fill(~mask, float("-inf"))
        y = scores.softmax(dim=-1).to(v.dtype) @ v
        return self.proj(y.transpose(1, 2).reshape(b, s, self.heads * self.d))


class Mlp(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 2 * config.intermediate_size, bias=False)
        self.proj = nn.Linear(config.intermediate_size, config.n_embd, bias=False)

    def forward(self, x):
        gate, up = self.fc(x).chunk(2, dim=-1)
        return self.proj(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.olmo = config.block_type == "olmo2"
        self.sandwich = config.block_type == "sandwich"
        self.attn = Attention(config)
        self.mlp = Mlp(config)
        self.norm_1 = RMSNorm(config.n_embd, config.norm_eps)
        self.norm_2 = RMSNorm(config.n_embd, config.norm_eps)
        if self.sandwich:
            self.norm_3 = RMSNorm(config.n_embd, config.norm_eps)
            self.norm_4 = RMSNorm(config.n_embd, config.norm_eps)

    def forward(self, x, cos, sin, mask):
        if self.sandwich:
            x = self.norm_2(x + self.attn(self.norm_1(x), cos, sin, mask))
            return self.norm_4(x + self.mlp(self.norm_3(x)))
        if self.olmo:
            x = x + self.norm_1(self.attn(x, cos, sin, mask))
            return x + self.norm_2(self.mlp(x))
        x = x + self.attn(self.norm_1(x), cos, sin, mask)
        return x + self.mlp(self.norm_2(x))


class RavenPreTrainedModel(PreTrainedModel):
    config_class = RavenConfig
    base_model_prefix = "model"  # as in the paper's files: the whole model is one module, no separate base
    _no_split_modules = ["Block"]
    _tied_weights_keys = ["lm_head.weight"]

    def _init_weights(self, module):
        # Weights come from the checkpoint; a fresh model keeps PyTorch's default initialisation.
        pass


class RavenForCausalLM(RavenPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        if config.block_type not in ("llama", "olmo2", "sandwich"):
            raise ValueError(f"block_type {config.block_type!r} is not supported (expected 'llama', 'olmo2' or 'sandwich')")
        if config.block_type == "sandwich":
            # Huginn keeps its rotary angles as a checkpoint buffer [1, block_size, 1, d/2, 2] (cos, sin).
            d = config.n_embd // config.n_heads
            inv = 1.0 / (config.rope_base ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
            ang = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv)
            self.register_buffer("freqs_cis", torch.stack([ang.cos(), ang.sin()], dim=-1)[None, :, None], persistent=True)
        if config.injection_type != "linear":
            raise ValueError(f"injection_type {config.injection_type!r} is not supported (expected 'linear')")
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                prelude=nn.ModuleList(Block(config) for _ in range(config.n_layers_in_prelude)),
                adapter=nn.Linear(2 * config.n_embd, config.n_embd, bias=config.bias),
                core_block=nn.ModuleList(Block(config) for _ in range(config.n_layers_in_recurrent_block)),
                coda=nn.ModuleList(Block(config) for _ in range(config.n_layers_in_coda)),
                ln_f=RMSNorm(config.n_embd, config.norm_eps),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.transformer.wte

    def set_input_embeddings(self, value):
        self.transformer.wte = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def initial_state(self, like):
        std = self.config.init_values["std"]
        if std <= 0:
            return torch.zeros_like(like)
        s = torch.nn.init.trunc_normal_(torch.empty_like(like), mean=0.0, std=std, a=-3 * std, b=3 * std)
        scale = self.config.init_values["embed_scale"]
        return s * scale if scale != 1 else s

    def noise(self, s, step):
        c = self.config
        n = c.test_time_noise * c.init_values["std"] * c.init_values["embed_scale"]
        kind = c.test_time_noise_type
        if kind == "fixed":
            a = n
        elif kind == "geom":
            a = n / (step + 1)
        elif kind == "sqrt":
            a = n / math.sqrt(step + 1)
        elif kind == "line":
            a = max(n, (c.mean_recurrence - step) / c.mean_recurrence)
        elif kind == "chi":
            a = 2 * torch.rand(1).item() * n
        else:
            raise ValueError(f"test_time_noise_type {kind!r} is not one of fixed, geom, sqrt, line, chi")
        return s * (1 - a) + torch.randn_like(s) * a

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        labels=None,
        num_steps=None,
        input_states=None,
        inputs_embeds=None,
        return_dict=None,
        **kwargs,
    ):
        c = self.config
        x = self.transformer.wte(input_ids) if inputs_embeds is None else inputs_embeds
        scale = c.init_values["embed_scale"]
        if scale != 1:
            x = x * scale
        b, s, _ = x.shape
        if position_ids is None:
            position_ids = torch.arange(s, device=x.device).unsqueeze(0).expand(b, s)
        if c.block_type == "sandwich":
            cos, sin = self.freqs_cis[0, position_ids[0]].unsqueeze(0).float(), None  # [1, S, 1, d/2, 2]
        else:
            # The rotary frequencies are computed per call (cheap), not kept as a buffer that loading on the meta
            # device would leave empty.
            inv_freq = inverse_frequencies(c, device=x.device)
            angles = position_ids[:, :, None].float() * inv_freq[None, None, :]
            angles = torch.cat([angles, angles], dim=-1)[:, None]  # [B, 1, S, d]
            cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        mask = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()[None, None]
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = mask & attention_mask[:, None, None, -s:].bool()
            mask = mask | torch.eye(s, dtype=torch.bool, device=x.device)  # a pad query sees itself
        for block in self.transformer.prelude:
            x = block(x, cos, sin, mask)
        if num_steps is None:
            steps = c.mean_recurrence
        elif isinstance(num_steps, (tuple, list)) or (torch.is_tensor(num_steps) and num_steps.numel() > 1):
            steps = int(sum(int(t) for t in num_steps))
        else:
            steps = int(num_steps)
        state = self.initial_state(x) if input_states is None else input_states.to(x.dtype)
        for step in range(steps):
            if c.test_time_noise > 0:
                state = self.noise(state, step)
            state = self.transformer.adapter(torch.cat([state, x], dim=-1))
            for block in self.transformer.core_block:
                state = block(state, cos, sin, mask)
        if c.block_type == "sandwich":
            state = self.transformer.ln_f(state)  # Huginn normalises the last state before the coda too
        for block in self.transformer.coda:
            state = block(state, cos, sin, mask)
        logits = self.lm_head(self.transformer.ln_f(state)).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=None)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, num_steps=None, **kwargs):
        # No cache: the whole sequence is run again at every step.
        return {"input_ids": input_ids, "attention_mask": attention_mask, "num_steps": num_steps}
