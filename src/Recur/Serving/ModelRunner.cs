using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;
using static TorchSharp.torch;

namespace Recur.Serving;

/// <summary>
/// One text generation request: prompt ids, length bound, sampling, test-time recurrence (null: the
/// model's default) and the text/token stops on top of the model's and tokenizer's end-of-text ids.
/// </summary>
public sealed record TextRequest(
    int[] PromptIds,
    int MaxTokens,
    SamplingOptions Sampling,
    int? Recurrences = null,
    IReadOnlyList<string>? StopStrings = null,
    IReadOnlyCollection<int>? StopIds = null);

/// <summary>
/// What a request produced. <see cref="FinishReason"/> is <c>stop</c> or <c>length</c>, as in OpenAI's API;
/// <see cref="Recurrences"/> is the T the model ran at (null for plain decoders).
/// </summary>
public sealed record TextResult(string Text, int PromptTokens, int CompletionTokens, string FinishReason, int? Recurrences = null);

/// <summary>
/// Text in, text out for one model and its tokenizer: the piece shared by <c>recur chat</c> and
/// <c>recur serve</c>. Streams text as it is decoded (<see cref="StreamingDecoder"/>), cuts at stop strings
/// without ever emitting text past them, and runs recurrent models at each call's own T and s_0 generator
/// (passed with the call; nothing is set on the model).
/// Not thread-safe: one call at a time (the server runs it on a single worker thread).
/// </summary>
public sealed class ModelRunner : IDisposable
{
    readonly HashSet<int> _stopIds;

    /// <param name="defaultRecurrences">T of requests that give none (null: the model's default); recurrent models only.</param>
    public ModelRunner(ICausalLM model, ITokenizer tokenizer, int? defaultRecurrences = null)
    {
        Model = model;
        Tokenizer = tokenizer;
        DefaultRecurrences = model is RecurrentModel rm ? defaultRecurrences ?? rm.DefaultRecurrences : null;
        _stopIds = [.. model.EosTokenIds, .. tokenizer.StopIds];
    }

    public ICausalLM Model { get; }
    public ITokenizer Tokenizer { get; }

    /// <summary>T used when a request gives none; null for plain decoders.</summary>
    public int? DefaultRecurrences { get; set; }

    public bool IsRecurrent => Model is RecurrentModel;
    public int ContextLength => Model.MaxPositions;

    /// <summary>Ids that end every reply (model config EOS and the tokenizer's stop ids).</summary>
    public IReadOnlyCollection<int> StopIds => _stopIds;

    /// <summary>The T a request runs at (null for plain decoders).</summary>
    public int? EffectiveRecurrences(TextRequest r) => IsRecurrent ? r.Recurrences ?? DefaultRecurrences : null;

    /// <summary>
    /// Runs <paramref name="batch"/> as one batched generation. All requests must share sampling settings
    /// and T (the worker only groups such requests). <paramref name="onText"/> receives (row, text) as text
    /// becomes final. Cancelling throws <see cref="OperationCanceledException"/> after the text so far was streamed.
    /// </summary>
    public IReadOnlyList<TextResult> Run(IReadOnlyList<TextRequest> batch, Action<int, string>? onText = null, CancellationToken cancel = default)
    {
        if (batch.Count == 0) return [];
        var first = batch[0];
        int? t = EffectiveRecurrences(first);
        foreach (var r in batch)
        {
            if (r.Sampling != first.Sampling || EffectiveRecurrences(r) != t)
                throw new ArgumentException("requests in one batch must share sampling settings and recurrences", nameof(batch));
            if (r.MaxTokens < 1) throw new RecurUserException($"max_tokens must be ≥ 1 (got {r.MaxTokens})");
            if (r.Recurrences is not null && !IsRecurrent)
                throw new RecurUserException("recurrences applies only to recurrent models; this model is a plain decoder");
        }

        // One seed drives both the sampler and s_0, so a request with a seed is reproducible at a given T.
        long seed = first.Sampling.Seed ?? Random.Shared.NextInt64(1, long.MaxValue);
        using var stateGenerator = Model is RecurrentModel ? new Generator((ulong)seed) : null;
        ICausalLM model = Model is RecurrentModel rm ? rm.At(Recurrence.Fixed(t!.Value, stateGenerator)) : Model;
        int? ran = (model as RecurrentModelAt)?.Recurrence.Iterations;

        var rows = batch.Select(r => new Row(r, Tokenizer)).ToArray();
        var options = new GenerationOptions(batch.Max(r => r.MaxTokens), first.Sampling with { Seed = seed }, _stopIds);
        foreach (var column in Generation.Stream(model, batch.Select(r => r.PromptIds).ToList(), options, cancel))
            for (int i = 0; i < rows.Length; i++)
            {
                if (!column.Emitted(i)) continue;
                string text = rows[i].Push(column.Token(i));
                if (text.Length > 0) onText?.Invoke(i, text);
                if (rows[i].Finished) column.Finish(i);
            }

        var results = new TextResult[rows.Length];
        for (int i = 0; i < rows.Length; i++)
        {
            string tail = rows[i].Flush();
            if (tail.Length > 0) onText?.Invoke(i, tail);
            results[i] = rows[i].Result() with { Recurrences = ran };
        }
        return results;
    }

    public void Dispose() { }

    /// <summary>Per-request decoding state inside a batch.</summary>
    sealed class Row(TextRequest request, ITokenizer tokenizer)
    {
        readonly StreamingDecoder _decoder = new(tokenizer);
        readonly StopStringMatcher _stops = new(request.StopStrings);
        readonly System.Text.StringBuilder _text = new();
        int _tokens;
        bool _stopped;

        public bool Finished => _stopped || _tokens >= request.MaxTokens;

        public string Push(int id)
        {
            if (Finished) return "";
            if (request.StopIds?.Contains(id) == true) { _stopped = true; return ""; }
            _tokens++;
            string piece = _stops.Push(_decoder.Push(id));
            _stopped = _stops.Stopped;
            _text.Append(piece);
            return piece;
        }

        public string Flush()
        {
            string piece = _stops.Push(_decoder.Flush()) + _stops.Flush();
            _text.Append(piece);
            return piece;
        }

        // A row that ends before its limit ended on a stop id (the model's, which Generate keeps out of the
        // output) or a stop string.
        public TextResult Result() => new(_text.ToString(), request.PromptIds.Length, _tokens,
            _stopped || _tokens < request.MaxTokens ? "stop" : "length");
    }
}
