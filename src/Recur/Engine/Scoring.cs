using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>Log-likelihood of continuations, batched, for evaluation (token-level loss: <see cref="Loss.Sum"/>).</summary>
public static class Scoring
{
    /// <summary>
    /// For each (context, continuation) pair of token ids: the summed log-probability of the continuation
    /// given the context, and whether every continuation token is the greedy choice (lm-eval's loglikelihood
    /// request). The model sees (context + continuation)[:-1], truncated from the left to its context length.
    /// Rows are right-padded within a batch (padding after a row's last token cannot affect it under causal
    /// attention), longest first so that padding stays small.
    /// </summary>
    public static (double LogProb, bool IsGreedy)[] LogLikelihood(ICausalLM model, IReadOnlyList<(int[] Context, int[] Continuation)> requests,
        int batchSize = 16, Action<int>? progress = null, CancellationToken cancel = default)
    {
        var results = new (double, bool)[requests.Count];
        int maxLen = model.MaxPositions;
        var order = Enumerable.Range(0, requests.Count).OrderByDescending(i => requests[i].Context.Length + requests[i].Continuation.Length).ToArray();
        using var noGrad = no_grad();
        int done = 0;
        for (int start = 0; start < order.Length; start += batchSize)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var idx = order.Skip(start).Take(batchSize).ToArray();
            var rows = new List<(long[] Input, int ContStart, int[] Cont)>();
            foreach (var i in idx)
            {
                var (ctx, cont) = requests[i];
                if (cont.Length == 0) throw new RecurUserException("a log-likelihood request has an empty continuation");
                var all = ctx.Concat(cont).ToArray();
                var input = all.Take(all.Length - 1).Select(x => (long)x).ToArray();
                if (input.Length > maxLen) input = input[^maxLen..];
                if (cont.Length > input.Length + 1) throw new RecurUserException($"a continuation of {cont.Length} tokens does not fit the model's context of {maxLen}");
                rows.Add((input, input.Length - cont.Length, cont));
            }
            int width = rows.Max(r => r.Input.Length);
            var flat = new long[rows.Count * width];
            for (int r = 0; r < rows.Count; r++) Array.Copy(rows[r].Input, 0, flat, r * width, rows[r].Input.Length);
            var ids = tensor(flat, [rows.Count, width]).to(model.Device);
            var hidden = model.Hidden(ids);
            for (int r = 0; r < rows.Count; r++)
            {
                var (input, contStart, cont) = rows[r];
                var h = hidden[r].narrow(0, contStart, cont.Length);
                var logp = model.Logits(h).log_softmax(-1);
                var target = tensor(cont.Select(x => (long)x).ToArray()).to(model.Device);
                double lp = logp.gather(1, target.unsqueeze(1)).sum().item<float>();
                bool greedy = logp.argmax(-1).eq(target).all().item<bool>();
                results[idx[r]] = (lp, greedy);
            }
            done += idx.Length;
            progress?.Invoke(done);
        }
        return results;
    }
}
