using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>
/// What the training loop needs from an optimizer: a step, a settable learning rate (base × schedule factor),
/// and state that round-trips through a checkpoint as named tensors (STYLE §4: Checkpoints/ stores it, Training/ owns it).
/// </summary>
public interface IOptimizer : IDisposable
{
    /// <summary>Short name used as a key prefix in checkpoints and in logs ("muon", "adamw").</summary>
    string Name { get; }

    /// <summary>The base learning rate from the recipe.</summary>
    double BaseLearningRate { get; }

    /// <summary>The learning rate the next <see cref="Step"/> uses; the trainer sets it to base × WSD factor.</summary>
    double LearningRate { get; set; }

    /// <summary>The parameters this optimizer updates, with their state-dict names.</summary>
    IReadOnlyList<(string Name, Parameter Param)> Parameters { get; }

    /// <summary>One update from the current gradients. A parameter without a gradient counts as a zero gradient.</summary>
    void Step();

    /// <summary>Clears the gradients of this optimizer's parameters.</summary>
    void ZeroGrad();

    /// <summary>
    /// The optimizer state as <c>{parameter name}.{buffer}</c> → tensor. The buffers are the optimizer's own live
    /// tensors (not copies: a 1B model's state is gigabytes); save them, do not dispose or modify them.
    /// </summary>
    IReadOnlyDictionary<string, Tensor> StateDict();

    /// <summary>Copies a state saved by <see cref="StateDict"/> into this optimizer; every key must be present with the same shape.</summary>
    void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, string source = "optimizer state");
}

/// <summary>Shared bookkeeping for the optimizers' named state.</summary>
static class OptimizerState
{
    /// <summary>A zero buffer like <paramref name="p"/> that survives any dispose scope the caller is in.</summary>
    public static Tensor ZerosLike(Parameter p) => zeros_like(p, requires_grad: false).DetachFromDisposeScope();

    public static IReadOnlyList<(string Name, Parameter Param)> Check(IEnumerable<(string Name, Parameter Param)> parameters, string optimizer)
    {
        var list = parameters.ToList();
        var dup = list.GroupBy(x => x.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null) throw new ArgumentException($"{optimizer}: parameter '{dup.Key}' is given twice");
        return list;
    }

    /// <summary>Validates that <paramref name="state"/> has exactly <paramref name="expected"/>'s keys and shapes, then copies the values.</summary>
    public static void Load(IReadOnlyDictionary<string, Tensor> state, IReadOnlyDictionary<string, Tensor> expected, string source)
    {
        foreach (var (key, target) in expected)
        {
            if (!state.TryGetValue(key, out var t)) throw new RecurUserException($"{source}: missing key '{key}'");
            if (!t.shape.SequenceEqual(target.shape))
                throw new RecurUserException($"{source}: key '{key}' has shape [{string.Join(", ", t.shape)}], expected [{string.Join(", ", target.shape)}]");
        }
        var extra = state.Keys.FirstOrDefault(k => !expected.ContainsKey(k));
        if (extra is not null) throw new RecurUserException($"{source}: unexpected key '{extra}' (saved for different parameters?)");
        using var _ = no_grad();
        foreach (var (key, target) in expected) target.copy_(state[key]);
    }
}
