#!/usr/bin/env python3
"""Huginn's adaptive-exit generation with the KL criterion, as the official code does it, on the tiny Huginn model.

Run with Debian's PyTorch:  /usr/bin/python3 tests/reference/official_adaptive.py
Writes tests/fixtures/parity/huginn-tiny-adaptive.json. Deterministic (no random draws: s_0 = 0, see below).

Semantics (written from seal-rg/recurrent-pretraining:recpre/raven_modeling_minimal.py at 59e0b69,
`generate_with_adaptive_compute` with criterion="kl", `KLExitEvaluator`, `HuginnDynamicCache` with the default
lookup_strategy="full"), implemented here independently of Recur:
  * every generation step (the prompt first, then one token per row) runs the prelude, then iterates the core block
    for the whole batch; after each iteration i (1-based) the coda and the head are evaluated on the state ("probe"),
    and the row's KL(p_{i-1} || p_i) of the LAST position's next-token distribution is compared with the threshold,
    p_0 being uniform over the padded vocabulary, so iteration 1 can exit too;
  * a row whose KL falls below the threshold exits: its logits are that probe's, its step count is i (compute_step
    + 1); the batch keeps iterating until every row has exited or max iterations have run (rows that never exit take
    the last probe); the prompt's exit is decided on its last position like any other step;
  * the cache keeps one entry per (layer application, position); the prelude's and the coda's entries exist for
    every position (the coda's are overwritten by each probe, the last probe's stay), core iteration i's entries
    only for the positions whose step ran at least i iterations. Attention at a core slot sees only the entries
    present there ("full" lookup: a token that exited sooner drops out of attention at deeper iterations);
  * greedy decoding (argmax); s_0 = 0, what the official initialize_state gives for init_values.std = 0 (so the
    two implementations draw no random numbers), no test-time noise.
"""

import json
import math
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io as st  # noqa: E402
from make_huginn_fixture import C, H, P, R, block as sandwich_block, rms  # noqa: E402

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(REPO, "tests", "fixtures")
torch.set_num_threads(1)


class EntryCache:
    """One K/V entry per (slot, position); a slot's attention sees the entries present, in position order."""

    def __init__(self):
        self.k, self.v = {}, {}

    def update(self, slot, positions, k, v):  # k, v [B, heads, S, d]
        ks, vs = self.k.setdefault(slot, {}), self.v.setdefault(slot, {})
        for t, pos in enumerate(positions):
            ks[pos], vs[pos] = k[:, :, t], v[:, :, t]
        order = sorted(ks)
        return torch.stack([ks[p] for p in order], dim=2), torch.stack([vs[p] for p in order], dim=2)


def block(w, pre, x, table, cache, slot, positions):
    """The sandwich block of make_huginn_fixture.py, attending to the entries present in the cache's slot."""
    return sandwich_block(w, pre, x, table, kv=lambda k, v: cache.update(slot, positions, k, v))


def generate(w, prompt, max_steps, threshold, new_tokens, vocab):
    """Greedy tokens [B, new], per-step depths [new][B], the logits [new, B, V], and per step whether an earlier
    position was missing from some core slot a query attended at (the drop-out actually happening)."""
    cache = EntryCache()
    b = prompt.shape[0]
    inp, past = prompt, 0
    tokens, depths, logits_all, dropped = [], [], [], []
    depth_of = {}  # position -> iterations its step ran
    for _ in range(new_tokens):
        s = inp.shape[1]
        positions = list(range(past, past + s))
        table = w["freqs_cis"][:, past: past + s]
        e = w["transformer.wte.weight"][inp] * math.sqrt(H)
        for j in range(P):
            e = block(w, f"transformer.prelude.{j}.", e, table, cache, ("prelude", j), positions)
        state = torch.zeros(b, s, H)
        prev = torch.full((b, vocab), 1.0 / vocab).log()
        exited = torch.zeros(b, dtype=torch.bool)
        out = torch.zeros(b, vocab)
        depth = [max_steps] * b
        for i in range(max_steps):
            state = torch.cat([state, e], dim=-1) @ w["transformer.adapter.weight"].T
            for j in range(R):
                state = block(w, f"transformer.core_block.{j}.", state, table, cache, ("core", i, j), positions)
            x = rms(state, w["transformer.ln_f.weight"])
            for j in range(C):
                x = block(w, f"transformer.coda.{j}.", x, table, cache, ("coda", j), positions)
            logits = (rms(x, w["transformer.ln_f.weight"]) @ w["transformer.wte.weight"].T).float()[:, -1]
            logp = logits.log_softmax(-1)
            kl = (prev.exp() * (prev - logp)).sum(-1)
            prev = logp
            new = (kl < threshold) & ~exited
            for r in range(b):
                if new[r]:
                    out[r], depth[r] = logits[r], i + 1
            exited |= new
            if exited.all():
                break
        else:
            for r in range(b):
                if not exited[r]:
                    out[r] = logits[r]
        steps = max(depth)  # the batch iterated this far: every row wrote these slots
        dropped.append(s == 1 and any(depth_of[p] < steps for p in range(past)))
        for p in positions:
            depth_of[p] = steps
        nxt = out.argmax(-1)
        tokens.append(nxt.tolist())
        depths.append(depth)
        logits_all.append(out.tolist())
        inp, past = nxt[:, None], past + s
    return tokens, depths, logits_all, dropped


def main():
    w = st.load_file(os.path.join(FIX, "models", "huginn-tiny", "model.safetensors"))[0]
    vocab = w["transformer.wte.weight"].shape[0]
    g = torch.Generator().manual_seed(2026)
    cases = []
    with torch.no_grad():
        # 0.3 makes some tokens exit at iteration 1 (against the uniform p_0).
        for b, threshold in ((1, 0.1), (2, 0.05), (1, 0.3)):
            prompt = torch.randint(5, vocab, (b, 6), generator=g)
            tokens, depths, logits, dropped = generate(w, prompt, 8, threshold, 10, vocab)
            flat = [d for step in depths[1:] for d in step]
            # The fixture must exercise what distinguishes these semantics: depths that vary (some below max), and
            # later tokens that attend where an earlier token left no entry.
            assert min(flat) < max(flat) and min(flat) < 8, depths
            assert any(dropped), dropped
            print(f"batch {b}: prompt depth {depths[0]}, decode depths {depths[1:]}, tokens {tokens}")
            cases.append({"prompt": prompt.tolist(), "threshold": threshold, "max": 8, "new_tokens": 10,
                          "tokens": tokens, "depths": depths, "logits": logits})
    out = os.path.join(FIX, "parity", "huginn-tiny-adaptive.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"model": "huginn-tiny with init_values.std = 0", "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
