using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>What the generation engine needs from a model: a cached forward and the number of cache slots it uses.</summary>
public interface ICausalLM : IDisposable
{
    /// <summary>Logits [B, S or 1, V] in fp32; see <see cref="DecoderModel.Forward"/>.</summary>
    Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false);

    /// <summary>Final-norm hidden states [B, S, h] in the compute dtype (T = the model's current recurrence).</summary>
    Tensor Hidden(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null);

    /// <summary>fp32 logits for hidden states from <see cref="Hidden"/>; lets callers project only the positions they need.</summary>
    Tensor Logits(Tensor hidden);

    /// <summary>KV-cache slots one forward call uses (layers, or unrolled layer applications).</summary>
    int CacheSlots { get; }

    int VocabSize { get; }
    int MaxPositions { get; }
    Device Device { get; }

    /// <summary>Token ids that end generation, from the model's config (the tokenizer may add more).</summary>
    IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>Dtype of activations and matmuls.</summary>
    ScalarType ComputeDType { get; set; }
}
