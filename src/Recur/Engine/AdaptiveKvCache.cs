using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>
/// KV cache for per-token recurrence depth (experimental, METHOD §7.3). Slots are numbered as the model numbers them
/// at T = max: prelude 0 … p−1, iteration i's core layer j at p + i·r + j, coda from p + r·max. The cache remembers how
/// many iterations every token ran.
/// </summary>
/// <remarks>
/// <para><b>The last-available rule.</b> A query at iteration i, core layer j sees, for an earlier token that ran D
/// iterations, the K/V that token produced at iteration min(i, D − 1) (0-based) of the <em>same layer j</em>. Unlike
/// Huginn's "m4" fallbacks (which hard-code a 4-layer core and 2-layer prelude, METHOD §7.3), the rule is per layer and
/// so holds for any block size r. With every token at the same depth it reduces to the exact fixed-T cache of §7.2.</para>
/// <para><b>How.</b> <see cref="AdaptiveCacheMode.Full"/> mode stores each core layer as one buffer [max, B, n_kv, capacity, d]; when a token's
/// depth is committed its iteration-(D − 1) K/V is copied forward into iterations D … max − 1 (r copies per row and step),
/// so a later query reads a plain contiguous slot, as in <see cref="KvCache"/>, instead of gathering per token at every
/// attention call. <see cref="AdaptiveCacheMode.Latest"/> keeps one buffer per core layer that every iteration overwrites:
/// an earlier token is then always seen at its final iteration, and memory is p + r + c slots whatever max is.</para>
/// <para><b>Steps.</b> <see cref="Append"/> writes at positions [Length, Length + S) without advancing; repeated writes
/// in one step overwrite, which lets the engine probe the coda at every iteration and keep only the final one.
/// <see cref="Commit"/> ends the step. <see cref="ActiveRows"/> restricts appends to the rows still iterating.</para>
/// </remarks>
public sealed class AdaptiveKvCache : IKvCache, IDisposable
{
    readonly int _p, _r, _c, _max, _batch, _capacity;
    readonly Tensor?[] _prelude, _core, _coda; // K then V interleaved: index 2·slot (K), 2·slot + 1 (V)
    readonly int[,] _depth;
    Tensor? _rows;
    bool _allRows = true;

    public AdaptiveKvCache(RecurConfig config, int maxIterations, int batch, int capacity, AdaptiveCacheMode mode = AdaptiveCacheMode.Full)
    {
        if (maxIterations < 1) throw new ArgumentOutOfRangeException(nameof(maxIterations));
        (_p, _r, _c) = config.Shape;
        _max = maxIterations; _batch = batch; _capacity = capacity;
        Mode = mode;
        _prelude = new Tensor?[2 * _p];
        _core = new Tensor?[2 * _r];
        _coda = new Tensor?[2 * _c];
        _depth = new int[batch, capacity];
    }

    public AdaptiveCacheMode Mode { get; }
    public int MaxIterations => _max;
    public int Slots => _p + _r * _max + _c;

    /// <summary>Forwards into this cache may use the GEMV kernel for single-row products (set by the generation engine).</summary>
    public bool MatVec { get; init; }
    /// <summary>Committed tokens per row.</summary>
    public int Length { get; private set; }
    public int Capacity => _capacity;

    /// <summary>Iterations token <paramref name="position"/> of <paramref name="row"/> ran (0 before it is committed).</summary>
    public int Depth(int row, int position) => _depth[row, position];

    /// <summary>Bytes held by the buffers.</summary>
    public long Bytes => _prelude.Concat(_core).Concat(_coda).Where(t => t is not null).Sum(t => t!.numel() * t.ElementSize);

    /// <summary>Rows [n] (int64) that the next appends belong to, in the order of the batch rows they receive; null = all rows.</summary>
    public Tensor? ActiveRows
    {
        get => _rows;
        set { _rows = value; _allRows = value is null; }
    }

    public (Tensor K, Tensor V) Append(int slot, Tensor k, Tensor v)
    {
        if (slot < 0 || slot >= Slots) throw new ArgumentOutOfRangeException(nameof(slot), $"slot {slot} outside 0..{Slots - 1}");
        int s = (int)k.shape[2];
        if (Length + s > _capacity) throw new InvalidOperationException($"adaptive KV cache holds {_capacity} tokens; {Length} + {s} do not fit");
        var (kb, vb) = Buffers(slot, k);
        Write(kb, k, s);
        Write(vb, v, s);
        return (Read(kb, s), Read(vb, s));
    }

    void Write(Tensor buffer, Tensor x, int s)
    {
        var dst = buffer.narrow(2, Length, s);
        if (_allRows) dst.copy_(x);
        else dst.index_copy_(0, _rows!, x);
    }

    Tensor Read(Tensor buffer, int s)
    {
        var all = buffer.narrow(2, 0, Length + s);
        return _allRows ? all : all.index_select(0, _rows!);
    }

    /// <summary>The [B, n_kv, capacity, d] K and V buffers of a slot (views into the per-layer stack for core slots).</summary>
    (Tensor K, Tensor V) Buffers(int slot, Tensor like)
    {
        if (slot < _p) return (Get(_prelude, 2 * slot, like, 0), Get(_prelude, 2 * slot + 1, like, 0));
        if (slot >= _p + _r * _max)
        {
            int j = slot - _p - _r * _max;
            return (Get(_coda, 2 * j, like, 0), Get(_coda, 2 * j + 1, like, 0));
        }
        int i = (slot - _p) / _r, layer = (slot - _p) % _r;
        if (Mode == AdaptiveCacheMode.Latest) return (Get(_core, 2 * layer, like, 0), Get(_core, 2 * layer + 1, like, 0));
        return (Get(_core, 2 * layer, like, _max).select(0, i), Get(_core, 2 * layer + 1, like, _max).select(0, i));
    }

    Tensor Get(Tensor?[] store, int index, Tensor like, int iterations)
    {
        if (store[index] is { } t) return t;
        long[] shape = iterations > 0
            ? [iterations, _batch, like.shape[1], _capacity, like.shape[3]]
            : [_batch, like.shape[1], _capacity, like.shape[3]];
        return store[index] = zeros(shape, like.dtype, like.device).DetachFromDisposeScope();
    }

    /// <summary>
    /// Ends a step of <paramref name="tokens"/> new tokens per row: records each row's depth (1 … max) for them and, in
    /// <see cref="AdaptiveCacheMode.Full"/> mode, copies each row's last iteration forward into the iterations it skipped.
    /// </summary>
    public void Commit(int tokens, IReadOnlyList<int> depths)
    {
        if (depths.Count != _batch) throw new ArgumentException($"need one depth per row ({_batch}), got {depths.Count}");
        using var scope = NewDisposeScope();
        ActiveRows = null;
        for (int b = 0; b < _batch; b++)
        {
            int d = depths[b];
            if (d < 1 || d > _max) throw new ArgumentOutOfRangeException(nameof(depths), $"row {b}: depth {d} outside 1..{_max}");
            for (int t = Length; t < Length + tokens; t++) _depth[b, t] = d;
            if (Mode != AdaptiveCacheMode.Full || d == _max) continue;
            foreach (var buffer in _core)
            {
                if (buffer is null) continue;
                // [max, B, n_kv, cap, d]: iterations d … max − 1 of row b at the new positions ← iteration d − 1.
                var last = buffer.select(0, d - 1).select(0, b).narrow(1, Length, tokens);
                buffer.narrow(0, d, _max - d).select(1, b).narrow(2, Length, tokens).copy_(last.unsqueeze(0));
            }
        }
        Length += tokens;
    }

    public void Dispose()
    {
        foreach (var store in new[] { _prelude, _core, _coda })
            for (int i = 0; i < store.Length; i++) { store[i]?.Dispose(); store[i] = null; }
    }
}
