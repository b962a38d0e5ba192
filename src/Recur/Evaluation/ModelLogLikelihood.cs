using Recur.Engine;
using Recur.Model;
using Recur.Tasks;
using Recur.Tokenization;

namespace Recur.Evaluation;

/// <summary>
/// <see cref="ILogLikelihood"/> for an <see cref="ICausalLM"/>: requests are encoded with lm-eval's
/// <c>_encode_pair</c> (<see cref="PromptEncoding.EncodePair"/>) and scored by <see cref="Scoring.LogLikelihood"/>
/// in batches of <see cref="BatchSize"/> rows (longest first), answered in input order.
/// </summary>
/// <remarks>
/// As with generation, a recurrent model's s_0 is drawn per batch, so results depend on the batch size
/// (and are reproduced exactly by the same batch size and seed).
/// </remarks>
public sealed class ModelLogLikelihood : ILogLikelihood
{
    readonly ICausalLM _model;
    readonly ITokenizer _tokenizer;

    public ModelLogLikelihood(ICausalLM model, ITokenizer tokenizer, int batchSize = 32)
    {
        if (batchSize < 1) throw new RecurUserException($"batch size must be at least 1 (got {batchSize})");
        _model = model;
        _tokenizer = tokenizer;
        BatchSize = batchSize;
    }

    public int BatchSize { get; }

    /// <summary>(requests done, requests total) after each batch of a <see cref="Score"/> call.</summary>
    public Action<int, int>? Progress { get; set; }

    public CancellationToken Cancel { get; set; }

    public IReadOnlyList<(double LogProb, bool IsGreedy)> Score(IReadOnlyList<(string Context, string Continuation)> requests)
    {
        var encoded = requests.Select(r => PromptEncoding.EncodePair(_tokenizer, r.Context, r.Continuation)).ToList();
        int total = encoded.Count;
        return Scoring.LogLikelihood(_model, encoded, BatchSize, done => Progress?.Invoke(done, total), Cancel);
    }
}
