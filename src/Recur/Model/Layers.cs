using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Recur.Model;

/// <summary>
/// Storage for attention keys and values across forward calls, indexed by <em>slot</em>. The model
/// decides what a slot is: one per layer for a plain decoder, one per unrolled layer application for
/// the recurrent model (METHOD §7.2). Implemented in <c>Recur.Engine</c>; the model only calls it.
/// </summary>
public interface IKvCache
{
    /// <summary>Tokens already stored (in slot 0) before the current forward call.</summary>
    int Length { get; }

    /// <summary>Number of slots; a recurrent forward checks it against p + r·T + c.</summary>
    int Slots { get; }

    /// <summary>Appends <paramref name="k"/>/<paramref name="v"/> [B, n_kv, S_new, d] to a slot and returns all of that slot's keys and values.</summary>
    (Tensor K, Tensor V) Append(int slot, Tensor k, Tensor v);

    /// <summary>
    /// Whether forwards into this cache may send single-row products to the <see cref="Gemv"/> kernel. The generation
    /// engine opts in for its decode caches; every other forward is the reference, libtorch's F.linear throughout.
    /// </summary>
    bool MatVec => false;
}

/// <summary>Per-call inputs shared by every attention layer: rotary tables, mask, cache.</summary>
public sealed class AttentionContext
{
    /// <summary>cos/sin tables [B or 1, 1, S, d] in the compute dtype.</summary>
    public required Tensor Cos { get; init; }
    public required Tensor Sin { get; init; }
    /// <summary>Boolean mask [B, 1, S, S_k], true = may attend; null when <see cref="Causal"/> or no masking is needed.</summary>
    public Tensor? Mask { get; init; }
    /// <summary>True when a plain causal mask over the current tokens is exact (no cache history, no padding).</summary>
    public bool Causal { get; init; }
    public IKvCache? Cache { get; init; }
    /// <summary>Casts weights to the compute dtype once per forward call, however often a layer runs (the recurrent block runs T times).</summary>
    public WeightCast? Weights { get; init; }

    /// <summary>The weight in the compute dtype (cached per forward call).</summary>
    public Tensor W(Tensor weight) => Weights?.Get(weight) ?? weight;

    /// <summary>y = x·Wᵀ with the weight in the compute dtype, through the kernel the cache chose (<see cref="IKvCache.MatVec"/>).</summary>
    public Tensor Linear(Tensor x, Tensor weight) => Ops.Linear(x, W(weight), Cache?.MatVec == true);
}

/// <summary>
/// The cast half of autocast: fp32 master weights are cast to the compute dtype at most once per forward call
/// and the cast reused, so a block applied T times casts (and back-propagates through the cast) once.
/// Lives for one forward call, which disposes it (autograd keeps what backward needs).
/// </summary>
public sealed class WeightCast(ScalarType dtype) : IDisposable
{
    // Keyed by grad mode too: a cast made in a no-grad iteration (truncated backprop's first n) must not be
    // reused by the grad iterations, or the weights would receive no gradient.
    readonly Dictionary<(IntPtr, bool), Tensor> _cast = new();

    public Tensor Get(Tensor weight)
    {
        if (weight.dtype == dtype) return weight;
        var key = (weight.Handle, is_grad_enabled());
        // Detached from the (inner) dispose scope it is made in: it must outlive that layer call. Disposed with this object.
        if (!_cast.TryGetValue(key, out var c)) _cast[key] = c = weight.to(dtype).DetachFromDisposeScope();
        return c;
    }

    public void Dispose()
    {
        foreach (var t in _cast.Values) t.Dispose();
        _cast.Clear();
    }
}

/// <summary>RMSNorm with statistics in fp32 (METHOD §2.4). TorchSharp has no RMSNorm module.</summary>
public sealed class RMSNorm : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // HF parameter name
    public Parameter weight; // not readonly: a loader binds it (BindWeight)
#pragma warning restore IDE1006
    readonly double _eps;
    // Held for the module's lifetime (see Ops.One): a temporary Scalar could be freed while libtorch reads it.
    readonly Scalar _epsScalar, _dimScalar;
    readonly bool _castBeforeWeight;

    /// <param name="castBeforeWeight">
    /// HF Llama casts the normalised value back to the input dtype before multiplying by the weight;
    /// HF OLMo-2 multiplies in fp32 and casts after. Identical in fp32.
    /// </param>
    public RMSNorm(long dim, double eps, bool castBeforeWeight = true) : base("RMSNorm")
    {
        weight = new Parameter(ones(dim, device: ParameterPlacement.Device));
        _eps = eps;
        _epsScalar = eps;
        _dimScalar = dim;
        _castBeforeWeight = castBeforeWeight;
        RegisterComponents();
    }

    /// <summary>Replaces the weight with a loaded tensor (a skeleton's meta weight, ParameterPlacement.cs).</summary>
    internal void BindWeight(Parameter p)
    {
        var old = weight;
        weight = p;
        ConditionallyRegisterParameter("weight", p);
        if (!ReferenceEquals(old, p)) old.Dispose();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var dt = x.dtype;
        var xf = x.to(ScalarType.Float32);
        // mean(x²) as ‖x‖²/h: one full-size pass (a norm) instead of two (square, mean), forward and backward.
        var y = xf * rsqrt(Scalars.Square(xf.norm(-1, keepdim: true)).div(_dimScalar).add(_epsScalar, Ops.One));
        var r = _castBeforeWeight ? y.to(dt) * weight.to(dt) : (y * weight.to(ScalarType.Float32)).to(dt);
        return r.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Rotary position embedding in HF's rotate-half convention, with the llama3 frequency scaling
/// (METHOD §2.4; huggingface/transformers:src/transformers/modeling_rope_utils.py).
/// </summary>
public sealed class Rope
{
    readonly Tensor _invFreq; // [d/2] fp32, on the model's device
    readonly Tensor? _cosTable, _sinTable; // [P, d/2] fp32 from a checkpoint (Huginn's freqs_cis), else null

    /// <summary>
    /// Tables given per position (Huginn's <c>freqs_cis</c>: cos and sin [P, d/2] of pair i at position p), for q/k
    /// whose interleaved pairs (2i, 2i+1) were permuted to (i, i + d/2) so that rotate-half applies them.
    /// </summary>
    public Rope(Tensor cosTable, Tensor sinTable, int headDim, double theta, Device device) : this(headDim, theta, null, device)
    {
        using var scope = NewDisposeScope(); // holds the fp32 copies while to(device) reads them (Model/Scalars.cs)
        _cosTable = cosTable.to(ScalarType.Float32).to(device).DetachFromDisposeScope();
        _sinTable = sinTable.to(ScalarType.Float32).to(device).DetachFromDisposeScope();
    }

    /// <summary>The per-position tables, when this rotary embedding was built from a checkpoint's.</summary>
    internal (Tensor Cos, Tensor Sin)? Table => _cosTable is null ? null : (_cosTable, _sinTable!);

    public Rope(ModelConfig cfg, Device device) : this(cfg.HeadDimension, cfg.RopeTheta, cfg.RopeScaling, device) { }

    public Rope(int headDim, double theta, RopeScaling? scaling, Device device)
    {
        var inv = Frequencies(headDim, theta, scaling);
        _invFreq = tensor(inv, device: device).DetachFromDisposeScope();
        InverseFrequencies = inv;
    }

    /// <summary>θ^(−2i/d) for i &lt; d/2 after any llama3 scaling, computed without libtorch (the libtorch-free path needs them too).</summary>
    internal static float[] Frequencies(int headDim, double theta, RopeScaling? scaling)
    {
        var inv = new float[headDim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            // HF computes theta^(-2i/d) in fp32 from an int64 arange; do the same so tables match bit for bit.
            float expo = (float)(2 * i) / headDim;
            inv[i] = 1.0f / MathF.Pow((float)theta, expo);
        }
        if (scaling is { RopeType: "llama3" } s)
        {
            double lowWave = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
            double highWave = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
            for (int i = 0; i < inv.Length; i++)
            {
                double wavelen = 2 * Math.PI / inv[i];
                if (wavelen < highWave) continue;                      // high frequencies kept
                if (wavelen > lowWave) { inv[i] = (float)(inv[i] / s.Factor); continue; } // low frequencies divided
                double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                inv[i] = (float)((1 - smooth) * inv[i] / s.Factor + smooth * inv[i]);
            }
        }
        return inv;
    }

    /// <summary>θ^(−2i/d) after any llama3 scaling, [d/2] (for code that applies RoPE outside libtorch).</summary>
    internal float[] InverseFrequencies { get; }

    /// <summary>
    /// cos and signed-sin tables [B, 1, S, d] for integer positions [B, S], in <paramref name="dtype"/>. The sin table
    /// carries rotate-half's sign, [−sin, +sin] over the two halves, so that <see cref="Apply"/> needs no negation.
    /// </summary>
    public (Tensor Cos, Tensor Sin) Tables(Tensor positions, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        if (_cosTable is not null)
        {
            long rows = _cosTable.shape[0];
            if (positions.numel() > 0 && positions.max().item<long>() >= rows)
                throw new RecurUserException($"position {positions.max().item<long>()} is beyond the model's rotary table of {rows} positions (block_size)");
            var flat = positions.reshape(-1);
            var c = _cosTable.index_select(0, flat).reshape([.. positions.shape, -1]);
            var sn = _sinTable!.index_select(0, flat).reshape([.. positions.shape, -1]);
            return (cat([c, c], -1).unsqueeze(1).to(dtype).MoveToOuterDisposeScope(), cat([sn.neg(), sn], -1).unsqueeze(1).to(dtype).MoveToOuterDisposeScope());
        }
        var ang = positions.to(ScalarType.Float32).unsqueeze(-1) * _invFreq; // [B, S, d/2]
        var cos = cat([ang.cos(), ang.cos()], -1).unsqueeze(1).to(dtype).MoveToOuterDisposeScope(); // [B, 1, S, d]
        var s = ang.sin();
        var sin = cat([s.neg(), s], -1).unsqueeze(1).to(dtype).MoveToOuterDisposeScope();
        return (cos, sin);
    }

    /// <summary>
    /// x·cos + rotate_half(x)·sin on [B, H, S, d], with rotate_half(x) = [−x₂, x₁]: rolling x by d/2 gives [x₂, x₁]
    /// and the signed sin table supplies the minus (one op fewer each way than chunk–neg–cat).
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor signedSin)
    {
        using var scope = NewDisposeScope();
        return Ops.Add(x * cos, x.roll(x.shape[^1] / 2, -1) * signedSin).MoveToOuterDisposeScope();
    }
}

/// <summary>Attention and linear helpers shared by the plain and the recurrent decoder.</summary>
public static class Ops
{
    /// <summary>The alpha of a + b, alive for the whole process (<see cref="Scalars"/> explains why).</summary>
    public static readonly Scalar One = Scalars.One;

    /// <summary>a + b with a long-lived alpha (<see cref="Scalars.Add(Tensor, Tensor)"/>).</summary>
    public static Tensor Add(Tensor a, Tensor b) => Scalars.Add(a, b);

    /// <summary>
    /// y = x·Wᵀ in x's dtype: fp32 master weights are cast at use, the explicit replacement for autocast (METHOD §4.2).
    /// With <paramref name="matVec"/> (the caller's explicit choice, <see cref="IKvCache.MatVec"/>) a single row without
    /// autograd goes to the bandwidth-bound <see cref="Gemv"/> kernel; otherwise, and always by default, to F.linear.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor weight, bool matVec = false) =>
        weight.dtype != x.dtype ? F.linear(x, weight.to(x.dtype))
        : matVec && Gemv.Handles(x, weight) ? Gemv.Apply(x, weight)
        : F.linear(x, weight);

    /// <summary>
    /// Scaled dot-product attention of q [B, n_h, S, d] over k, v [B, n_kv, S_k, d] with grouped-query
    /// heads: K/V head j serves query heads j·g … j·g+g−1 (HF repeat_kv). TorchSharp's SDPA has no GQA
    /// flag, so for a single query token we fold the g query heads into the query axis (no K/V copy);
    /// otherwise K/V heads are expanded.
    /// </summary>
    public static Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal)
    {
        long b = q.shape[0], nh = q.shape[1], s = q.shape[2], d = q.shape[3], nkv = k.shape[1];
        long g = nh / nkv;
        if (s > 1 && PlainAttentionPays(q.dtype, b * nh * s * k.shape[2])) return PlainAttention(q, k, v, mask, causal, g);
        if (g == 1) return F.scaled_dot_product_attention(q, k, v, mask, 0.0, causal);
        using var scope = NewDisposeScope();
        if (s == 1 && !causal)
        {
            var qg = q.reshape(b, nkv, g, d);
            var o = F.scaled_dot_product_attention(qg, k, v, mask, 0.0, false); // mask [B,1,1,S_k] broadcasts
            return o.reshape(b, nh, 1, d).MoveToOuterDisposeScope();
        }
        long sk = k.shape[2];
        var ke = k.unsqueeze(2).expand(b, nkv, g, sk, d).reshape(b, nh, sk, d);
        var ve = v.unsqueeze(2).expand(b, nkv, g, sk, d).reshape(b, nh, sk, d);
        return F.scaled_dot_product_attention(q, ke, ve, mask, 0.0, causal).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// libtorch's CPU SDPA kernel is slower than the plain matmul–softmax–matmul form in bf16 at the sizes we train
    /// and prefill at, and faster in fp32 (bench/RESULTS.md, "Attention kernel"). The plain form materialises the
    /// B·H·S·S_k scores, so it is used only while they are small (≤ 2^24 elements, 32 MiB in bf16).
    /// RECUR_ATTENTION=sdpa|plain forces one or the other.
    /// </summary>
    static bool PlainAttentionPays(ScalarType dtype, long scores) => AttentionChoice switch
    {
        "sdpa" => false,
        "plain" => scores <= 1L << 28,
        _ => dtype == ScalarType.BFloat16 && scores <= 1L << 24,
    };
    static readonly string AttentionChoice = Environment.GetEnvironmentVariable("RECUR_ATTENTION") ?? "auto";

    /// <summary>softmax(q·kᵀ/√d + mask)·v with K/V heads expanded for GQA.</summary>
    static Tensor PlainAttention(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal, long g)
    {
        using var scope = NewDisposeScope();
        if (g > 1) { k = k.repeat_interleave(g, 1); v = v.repeat_interleave(g, 1); }
        long s = q.shape[2], sk = k.shape[2];
        var scores = Scalars.Mul(q, 1.0 / Math.Sqrt(q.shape[3])).matmul(k.transpose(-2, -1)); // scaling q is cheaper than scaling the scores
        // In place: the matmul's backward needs its inputs, not its output.
        if (mask is not null) scores.masked_fill_(mask.logical_not(), Scalars.NegativeInfinity);
        else if (causal) scores.masked_fill_(ones(s, sk, ScalarType.Bool, q.device).triu(sk - s + 1), Scalars.NegativeInfinity);
        // libtorch's CPU softmax accumulates reduced-precision inputs in fp32 internally; the output is rounded once.
        return scores.softmax(-1).matmul(v).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// One transformer block's residual structure (METHOD §2.3). Llama: x + Attn(norm1(x)), then
    /// + MLP(norm2(·)). OLMo-2: x + norm1(Attn(x)), then + norm2(MLP(·)).
    /// </summary>
    public static Tensor Block(Tensor x, BlockType type, Func<Tensor, Tensor> attn, Func<Tensor, Tensor> mlp, RMSNorm norm1, RMSNorm norm2)
    {
        using var scope = NewDisposeScope();
        Tensor y;
        if (type == BlockType.Llama)
        {
            var h = Ops.Add(x, attn(norm1.call(x)));
            y = Ops.Add(h, mlp(norm2.call(h)));
        }
        else
        {
            var h = Ops.Add(x, norm1.call(attn(x)));
            y = Ops.Add(h, norm2.call(mlp(h)));
        }
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>SwiGLU on the two halves of a fused [.., 2I] projection: SiLU(first) ⊙ second (METHOD §2.4).</summary>
    public static Tensor SwiGluFused(Tensor gateUp)
    {
        using var scope = NewDisposeScope();
        var halves = gateUp.chunk(2, -1);
        return (F.silu(halves[0]) * halves[1]).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Everything between the q/k/v projections and the output projection: OLMo-2's q/k RMSNorm over
    /// the full projected vectors (before the head reshape and RoPE, METHOD §2.3), head reshape, RoPE,
    /// the KV cache, and attention. q [B, S, n_h·d], k/v [B, S, n_kv·d] → [B, S, n_h·d].
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, RMSNorm? qNorm, RMSNorm? kNorm, int nh, int nkv, int d, AttentionContext ctx, int slot)
    {
        using var scope = NewDisposeScope();
        long b = q.shape[0], s = q.shape[1];
        if (qNorm is not null) { q = qNorm.call(q); k = kNorm!.call(k); }
        q = q.view(b, s, nh, d).transpose(1, 2);
        k = k.view(b, s, nkv, d).transpose(1, 2);
        v = v.view(b, s, nkv, d).transpose(1, 2);
        q = Rope.Apply(q, ctx.Cos, ctx.Sin);
        k = Rope.Apply(k, ctx.Cos, ctx.Sin);
        if (ctx.Cache is not null) (k, v) = ctx.Cache.Append(slot, k, v);
        var o = Attend(q, k, v, ctx.Mask, ctx.Causal);
        return o.transpose(1, 2).reshape(b, s, nh * d).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Builds positions and the attention mask for a call of S new tokens after <paramref name="past"/> cached ones.
    /// <paramref name="keyPadding"/> is [B, past + S] (true/1 = real token) for left-padded batches; pads get
    /// HF's position ids (cumsum − 1, pads set to 1) and are never attended to, except that a pad query sees
    /// itself so that its softmax row is defined.
    /// </summary>
    public static (Tensor Positions, Tensor? Mask, bool Causal) Layout(long batch, long s, long past, Tensor? keyPadding, Device device)
    {
        using var scope = NewDisposeScope();
        Tensor positions;
        Tensor? mask = null;
        bool causal = false;
        if (keyPadding is null)
        {
            positions = Scalars.Arange(past, past + s, device).unsqueeze(0).expand(batch, s);
            if (s > 1 && past == 0) causal = true;
            else if (s > 1)
            {
                var qi = Scalars.Arange(past, past + s, device).unsqueeze(1);
                var ki = Scalars.Arange(0, past + s, device).unsqueeze(0);
                mask = ki.le(qi).unsqueeze(0).unsqueeze(0); // [1,1,S,past+S]
            }
        }
        else
        {
            if (keyPadding.shape[0] != batch || keyPadding.shape[1] != past + s)
                throw new ArgumentException($"key padding mask must be [{batch}, {past + s}], got [{string.Join(", ", keyPadding.shape)}]");
            var real = keyPadding.to(ScalarType.Bool).to(device);
            var all = real.to(ScalarType.Int64).cumsum(1).sub(Scalars.One);
            all = all.masked_fill(real.logical_not(), Scalars.One);
            positions = all.narrow(1, past, s);
            var qi = Scalars.Arange(past, past + s, device).unsqueeze(1);
            var ki = Scalars.Arange(0, past + s, device).unsqueeze(0);
            var causalMask = ki.le(qi).unsqueeze(0);                      // [1, S, K]
            var allowed = causalMask.logical_and(real.unsqueeze(1));      // [B, S, K]
            var self = ki.eq(qi).unsqueeze(0);                            // a pad query attends to itself
            mask = allowed.logical_or(self).unsqueeze(1);                 // [B, 1, S, K]
        }
        positions = positions.MoveToOuterDisposeScope();
        mask = mask?.MoveToOuterDisposeScope();
        return (positions, mask, causal);
    }
}
