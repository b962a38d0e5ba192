using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Tests.Support;

/// <summary>
/// A model that forwards every member to a real one; tests derive from it and override the one member they change
/// (a slow or failing forward, other end-of-sequence ids). Being a type the fast decoder does not know, a wrapper
/// also makes generation take the op-by-op path.
/// </summary>
public abstract class DelegatingModel(ICausalLM inner, bool ownsInner) : ICausalLM
{
    protected ICausalLM Inner => inner;

    public virtual Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false) =>
        inner.Forward(inputIds, keyPadding, cache, lastOnly);
    public Tensor Hidden(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null) => inner.Hidden(inputIds, keyPadding, cache);
    public Tensor Logits(Tensor hidden) => inner.Logits(hidden);
    public int CacheSlots => inner.CacheSlots;
    public int VocabSize => inner.VocabSize;
    public int MaxPositions => inner.MaxPositions;
    public Device Device => inner.Device;
    public virtual IReadOnlyList<int> EosTokenIds => inner.EosTokenIds;
    public ScalarType ComputeDType { get => inner.ComputeDType; set => inner.ComputeDType = value; }

    public void Dispose()
    {
        if (ownsInner) inner.Dispose();
        GC.SuppressFinalize(this);
    }
}
