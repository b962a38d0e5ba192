using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>
/// A recurrent model seen at one fixed <see cref="Model.Recurrence"/>, for code written against any
/// <see cref="ICausalLM"/> (generation, scoring, evaluation). An immutable view: it changes nothing on the model,
/// so two views of one model never see each other's T or s_0 generator. Disposing it does not dispose the model.
/// </summary>
public sealed class RecurrentModelAt(RecurrentModel model, Recurrence recurrence) : ICausalLM
{
    public RecurrentModel Model { get; } = model;
    public Recurrence Recurrence { get; } = recurrence;

    public Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false) =>
        Model.Forward(inputIds, Recurrence, keyPadding: keyPadding, cache: cache, lastOnly: lastOnly);

    public Tensor Hidden(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null) =>
        Model.Hidden(inputIds, Recurrence, keyPadding: keyPadding, cache: cache);

    public Tensor Logits(Tensor hidden) => Model.Logits(hidden);
    public int CacheSlots => Model.Config.EffectiveDepth(Recurrence.Iterations);
    public int VocabSize => Model.VocabSize;
    public int MaxPositions => Model.MaxPositions;
    public Device Device => Model.Device;
    public IReadOnlyList<int> EosTokenIds => Model.EosTokenIds;
    public ScalarType ComputeDType { get => Model.ComputeDType; set => Model.ComputeDType = value; }
    public void Dispose() { }

    /// <summary>The recurrent model behind <paramref name="model"/> and the recurrence it is seen at (null: its default), or null for a plain decoder.</summary>
    public static (RecurrentModel Model, Recurrence? Recurrence)? Unwrap(ICausalLM model) => model switch
    {
        RecurrentModelAt v => (v.Model, v.Recurrence),
        RecurrentModel rm => (rm, null),
        _ => null,
    };
}
