// Activation checkpointing for one recurrence (TorchSharp has no torch.utils.checkpoint).
//
// A grad iteration of the recurrent block normally keeps every activation of its r layers for backward, so
// memory grows with k·r layer applications. Checkpointed, the forward runs without a graph and keeps only its
// inputs (state, e) and the rotary tables / mask; backward recomputes the iteration with a graph and
// back-propagates through it at once. Weight gradients accumulate straight into the (fp32) parameters from that
// inner backward; the state and e gradients are returned to the outer graph. Costs one extra forward of the
// recurrent block per grad iteration; activation memory drops to one iteration's worth.
// The iteration is deterministic (no dropout, s_0 is an input), so the recomputation reproduces the forward.
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Recur.Model;

internal sealed class IterationCheckpoint : MultiTensorFunction<IterationCheckpoint>
{
    public override string Name => "RecurrenceCheckpoint";

    /// <summary>s ← R(A(concat[s, e])) without keeping its activations; gradients as if it had.</summary>
    public static Tensor Apply(RecurrentModel model, Tensor state, Tensor e, AttentionContext attention, ForwardContext ctx, int firstSlot)
    {
        if (attention.Cache is not null) throw new InvalidOperationException("recurrence checkpointing is for training forwards (no KV cache)");
        // Tensor arguments become graph inputs; the rest travels as data. Mask may be null (pure causal).
        return apply(state, e, attention.Cos, attention.Sin, attention.Mask!, model, ctx, firstSlot, attention.Causal)[0];
    }

    public override List<Tensor> forward(AutogradContext ctx, params object[] vars)
    {
        var (state, e, cos, sin, mask) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], (Tensor)vars[3], vars[4] as Tensor);
        var (model, fctx, slot, causal) = ((RecurrentModel)vars[5], (ForwardContext)vars[6], (int)vars[7], (bool)vars[8]);
        ctx.save_for_backward([state, e, cos, sin, mask!]);
        ctx.save_data("model", model);
        ctx.save_data("slot", slot);
        ctx.save_data("causal", causal);
        ctx.save_data("state_grad", state.requires_grad);
        ctx.save_data("e_grad", e.requires_grad);
        using var scope = NewDisposeScope(); // the iteration's temporaries go now, not at the end of the whole forward
        return [model.Iterate(state, e, fctx, slot).MoveToOuterDisposeScope()];
    }

    public override List<Tensor> backward(AutogradContext ctx, List<Tensor> gradOutputs)
    {
        var saved = ctx.get_saved_variables();
        var model = (RecurrentModel)ctx.get_data("model");
        int slot = (int)ctx.get_data("slot");
        bool stateGrad = (bool)ctx.get_data("state_grad"), eGrad = (bool)ctx.get_data("e_grad");
        Tensor? gs = null, ge = null;
        using (var scope = NewDisposeScope())
        using (enable_grad())
        {
            var s = saved[0].detach().requires_grad_(stateGrad);
            var e = saved[1].detach().requires_grad_(eGrad);
            var weights = new WeightCast(model.ComputeDType);
            using var fctx = new ForwardContext(new AttentionContext
            {
                Cos = saved[2], Sin = saved[3], Mask = saved[4], Causal = (bool)ctx.get_data("causal"), Weights = weights,
            }, weights, stateGenerator: null);
            var output = model.Iterate(s, e, fctx, slot);
            output.backward([gradOutputs[0]]); // weight gradients accumulate into the parameters here
            if (stateGrad) gs = s.grad!.MoveToOuterDisposeScope();
            if (eGrad) ge = e.grad!.MoveToOuterDisposeScope();
        }
        return [gs!, ge!, null!, null!, null!, null!, null!, null!, null!];
    }
}
