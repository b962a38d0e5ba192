using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>
/// Keys and values per slot in preallocated buffers [B, n_kv, capacity, d] that grow by doubling.
/// A slot is whatever the model says it is: a layer for a plain decoder, an unrolled layer
/// application for the recurrent model (METHOD §7.2, STYLE §5). The buffers live outside every
/// dispose scope and are freed by <see cref="Dispose"/>.
/// </summary>
public sealed class KvCache : IRawKvCache, IDisposable
{
    readonly Tensor?[] _k, _v;
    readonly int[] _fill, _capacity;
    readonly IntPtr[] _kAddress, _vAddress;
    readonly (long Batch, long KvHeads, long HeadDim, ScalarType DType)[] _layout;
    int _capacityHint;

    public KvCache(int slots, int capacityHint = 256)
    {
        _k = new Tensor?[slots];
        _v = new Tensor?[slots];
        _fill = new int[slots];
        _capacity = new int[slots];
        _kAddress = new IntPtr[slots];
        _vAddress = new IntPtr[slots];
        _layout = new (long, long, long, ScalarType)[slots];
        _capacityHint = Math.Max(1, capacityHint);
    }

    public int Slots => _k.Length;

    /// <summary>Forwards into this cache may use the GEMV kernel for single-row products (set by the generation engine).</summary>
    public bool MatVec { get; init; }

    /// <summary>The fast decoder's weights by address for the model generating into this cache (FastDecoder.cs); one generation, one plan.</summary>
    internal object? DecodePlan { get; set; }
    public int Length => _fill.Length == 0 ? 0 : _fill[0];

    /// <summary>Bytes held by the cache's buffers (capacity, not fill).</summary>
    public long Bytes => _k.Concat(_v).Where(t => t is not null).Sum(t => t!.numel() * t.ElementSize);

    public (Tensor K, Tensor V) Append(int slot, Tensor k, Tensor v)
    {
        if (slot < 0 || slot >= _k.Length) throw new ArgumentOutOfRangeException(nameof(slot), $"slot {slot} outside 0..{_k.Length - 1}");
        int add = (int)k.shape[2], fill = _fill[slot];
        if (_k[slot] is null || fill + add > _k[slot]!.shape[2])
        {
            int cap = Math.Max(Math.Max(_capacityHint, fill + add), _k[slot] is null ? 0 : (int)_k[slot]!.shape[2] * 2);
            _k[slot] = Grow(_k[slot], k, cap, fill);
            _v[slot] = Grow(_v[slot], v, cap, fill);
            Track(slot);
        }
        _k[slot]!.narrow(2, fill, add).copy_(k);
        _v[slot]!.narrow(2, fill, add).copy_(v);
        _fill[slot] = fill + add;
        return (_k[slot]!.narrow(2, 0, fill + add), _v[slot]!.narrow(2, 0, fill + add));
    }

    /// <summary>
    /// Room for one more position in <paramref name="slot"/> for every row of a one-token step that writes the new keys
    /// and values itself (the fast decoder): the addresses of the slot's whole buffers [batch, n_kv, capacity, d]
    /// (contiguous), the capacity, and the position to write.
    /// </summary>
    public (IntPtr K, IntPtr V, int Capacity, int Position) AppendColumn(int slot, long batch, long kvHeads, long headDim, ScalarType dtype)
    {
        if (slot < 0 || slot >= _k.Length) throw new ArgumentOutOfRangeException(nameof(slot), $"slot {slot} outside 0..{_k.Length - 1}");
        int fill = _fill[slot];
        if (_k[slot] is not null && _layout[slot] != (batch, kvHeads, headDim, dtype))
            throw new InvalidOperationException($"KV cache slot {slot} holds [{_layout[slot].Batch}, {_layout[slot].KvHeads}, ·, {_layout[slot].HeadDim}] {_layout[slot].DType} entries; a one-token step asked for [{batch}, {kvHeads}, ·, {headDim}] {dtype}");
        if (_k[slot] is null || fill + 1 > _capacity[slot])
        {
            int cap = Math.Max(Math.Max(_capacityHint, fill + 1), _k[slot] is null ? 0 : _capacity[slot] * 2);
            _k[slot] = Grow(_k[slot], [batch, kvHeads, cap, headDim], dtype, CPU, fill);
            _v[slot] = Grow(_v[slot], [batch, kvHeads, cap, headDim], dtype, CPU, fill);
            Track(slot);
        }
        _fill[slot] = fill + 1;
        return (_kAddress[slot], _vAddress[slot], _capacity[slot], fill);
    }

    /// <summary>Positions stored in <paramref name="slot"/>.</summary>
    public int Filled(int slot) => _fill[slot];

    /// <summary>The keys and values stored in <paramref name="slot"/>, [B, n_kv, filled, d] views (null when it holds none).</summary>
    public (Tensor K, Tensor V)? Entries(int slot) =>
        _k[slot] is null ? null : (_k[slot]!.narrow(2, 0, _fill[slot]), _v[slot]!.narrow(2, 0, _fill[slot]));

    /// <summary>
    /// Rolls slots <paramref name="firstSlot"/> … <paramref name="firstSlot"/> + <paramref name="count"/> − 1 back to at
    /// most <paramref name="length"/> positions: the later ones are forgotten (overwritten by the next appends) and the
    /// buffers keep their capacity. Speculative decoding drops a rejected draft this way (Speculative.cs).
    /// </summary>
    public void Truncate(int length, int firstSlot = 0, int? count = null)
    {
        int n = count ?? _fill.Length - firstSlot;
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), $"length {length} < 0");
        if (firstSlot < 0 || n < 0 || firstSlot + n > _fill.Length) throw new ArgumentOutOfRangeException(nameof(count), $"slots {firstSlot}..{firstSlot + n - 1} outside 0..{_fill.Length - 1}");
        for (int i = firstSlot; i < firstSlot + n; i++) _fill[i] = Math.Min(_fill[i], length);
    }

    /// <summary>Caches a slot's capacity and buffer addresses after its buffers change.</summary>
    void Track(int slot)
    {
        var shape = _k[slot]!.shape;
        _capacity[slot] = (int)shape[2];
        _layout[slot] = (shape[0], shape[1], shape[3], _k[slot]!.dtype);
        _kAddress[slot] = Gemv.Address(_k[slot]!);
        _vAddress[slot] = Gemv.Address(_v[slot]!);
    }

    static Tensor Grow(Tensor? old, Tensor like, int capacity, int fill) =>
        Grow(old, [like.shape[0], like.shape[1], capacity, like.shape[3]], like.dtype, like.device, fill);

    static Tensor Grow(Tensor? old, long[] shape, ScalarType dtype, Device device, int fill)
    {
        var t = empty(shape, dtype, device).DetachFromDisposeScope();
        if (old is not null)
        {
            if (fill > 0) t.narrow(2, 0, fill).copy_(old.narrow(2, 0, fill));
            old.Dispose();
        }
        return t;
    }

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++)
        {
            _k[i]?.Dispose(); _v[i]?.Dispose();
            _k[i] = _v[i] = null;
            _fill[i] = _capacity[i] = 0;
            _kAddress[i] = _vAddress[i] = IntPtr.Zero;
        }
    }
}
