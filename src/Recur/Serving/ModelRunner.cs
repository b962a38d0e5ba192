using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;
using static TorchSharp.torch;

namespace Recur.Serving;

/// <summary>How a request's generated ids become text.</summary>
public enum TextLayout
{
    /// <summary>The generated ids decoded on their own (library generation).</summary>
    Standalone,
    /// <summary>
    /// The text the generated ids add to the prompt's text, as OpenAI's completions return it (and as transformers gives
    /// <c>decode(prompt + new)[len(decode(prompt)):]</c>): "The capital of France is" continues with " Paris", keeping
    /// the space that SentencePiece decoders drop from the first piece of a text.
    /// </summary>
    ContinuesPrompt,
    /// <summary>
    /// A chat reply: decoded on its own, and a single leading space removed, as SentencePiece's decoder (and
    /// transformers' <c>Strip</c> decoder step) removes the dummy-prefix space from a text's first piece. Byte-level
    /// tokenizers keep the space in the token ("ĠHello" after "Assistant:"), so without this a reply would start with it.
    /// </summary>
    ChatReply,
}

/// <summary>
/// One text generation request: prompt ids, length bound, sampling, test-time recurrence (null: the
/// model's default) and the text/token stops on top of the model's and tokenizer's end-of-text ids.
/// <paramref name="Logprobs"/>: null for none, else how many alternatives each generated token reports.
/// <paramref name="Speculate"/>: self-speculative decoding (greedy, one request per batch; Engine/Speculative.cs).
/// </summary>
public sealed record TextRequest(
    int[] PromptIds,
    int MaxTokens,
    SamplingOptions Sampling,
    int? Recurrences = null,
    IReadOnlyList<string>? StopStrings = null,
    IReadOnlyCollection<int>? StopIds = null,
    TextLayout Layout = TextLayout.Standalone,
    int? Logprobs = null,
    SpeculativeOptions? Speculate = null);

/// <summary>
/// The log-probability of one token at its position (natural log, under the model's distribution before
/// temperature and top-k/top-p), and the most likely alternatives there, most likely first.
/// </summary>
public sealed record TokenLogprob(int Id, double Logprob, IReadOnlyList<(int Id, double Logprob)> Top);

/// <summary>
/// What a request produced. <see cref="FinishReason"/> is <c>stop</c> or <c>length</c>, as in OpenAI's API;
/// <see cref="Recurrences"/> is the T the model ran at (null for plain decoders). <see cref="Tokens"/> holds every
/// generated id (a stop id that ended the reply included, as OpenAI and vLLM report it) with its log-probability
/// when the request asked for them; <see cref="CompletionTokens"/> does not count a stop id.
/// </summary>
public sealed record TextResult(string Text, int PromptTokens, int CompletionTokens, string FinishReason, int? Recurrences = null,
    IReadOnlyList<TokenLogprob>? Tokens = null);

/// <summary>
/// Text in, text out for one model and its tokenizer: the piece shared by <c>recur chat</c> and
/// <c>recur serve</c>. Streams text as it is decoded (<see cref="StreamingDecoder"/>), cuts at stop strings
/// without ever emitting text past them, and runs recurrent models at each call's own T and s_0 generator
/// (passed with the call; nothing is set on the model).
/// Not thread-safe: one call at a time (the server runs it on a single worker thread).
/// </summary>
public sealed class ModelRunner
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

    /// <summary>
    /// Self-speculative decoding (<c>recur serve --speculate</c>) for every call that can take it: one request, greedy,
    /// without log-probabilities, on a recurrent model at a T above the draft's. Other calls decode plainly; both give
    /// the same tokens (Engine/Speculative.cs). A request's own <see cref="TextRequest.Speculate"/> takes precedence.
    /// </summary>
    public SpeculativeOptions? Speculate { get; init; }

    /// <summary>Calls that ran with speculative decoding so far (tests: that the server's speculation engaged).</summary>
    internal long Speculated { get; private set; }

    /// <summary>Throws a <see cref="RecurUserException"/> saying why <paramref name="speculate"/> cannot run on this model at its default T, if it cannot.</summary>
    public void EnsureCanSpeculate(SpeculativeOptions speculate) =>
        Speculative.EnsureSupported(Model is RecurrentModel rm ? rm.At(Recurrence.Fixed(DefaultRecurrences!.Value)) : Model, speculate);

    /// <summary>The speculation a call of <paramref name="batch"/> at T = <paramref name="t"/> runs with (null: plain decoding).</summary>
    SpeculativeOptions? SpeculationFor(IReadOnlyList<TextRequest> batch, int? t)
    {
        var first = batch[0];
        var s = first.Speculate ?? (Speculate is { } d && batch.Count == 1 && first.Sampling.Greedy && first.Logprobs is null && t > d.DraftRecurrences ? d : null);
        if (s is not null) Speculated++;
        return s;
    }

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
            if (r.Sampling != first.Sampling || EffectiveRecurrences(r) != t || r.Speculate != first.Speculate)
                throw new ArgumentException("requests in one batch must share sampling settings, recurrences and speculation", nameof(batch));
            if (r.MaxTokens < 0) throw new RecurUserException($"max_tokens must be ≥ 0 (got {r.MaxTokens})");
            if (r.Recurrences is not null && !IsRecurrent)
                throw new RecurUserException("recurrences applies only to recurrent models; this model is a plain decoder");
        }

        // One seed drives both the sampler and s_0, so a request with a seed is reproducible at a given T.
        long seed = first.Sampling.Seed ?? Random.Shared.NextInt64(1, long.MaxValue);
        using var stateGenerator = Model is RecurrentModel ? new Generator((ulong)seed) : null;
        ICausalLM model = Model is RecurrentModel rm ? rm.At(Recurrence.Fixed(t!.Value, stateGenerator)) : Model;
        int? ran = (model as RecurrentModelAt)?.Recurrence.Iterations;

        var rows = batch.Select((r, i) => new Row(r, Tokenizer) { Index = i }).ToArray();
        var options = new GenerationOptions(batch.Max(r => r.MaxTokens), first.Sampling with { Seed = seed }, _stopIds) { Speculate = SpeculationFor(batch, t) };
        int topK = batch.Max(r => r.Logprobs ?? -1);
        LogitsTap? tap = null;
        // Requests that ask for log-probabilities run with a per-step forward that also keeps the step's log-softmax.
        var columns = batch.Max(r => r.MaxTokens) == 0 ? []
            : topK < 0 ? Generation.Stream(model, batch.Select(r => r.PromptIds).ToList(), options, cancel)
            : Generation.Steps(model, batch.Select(r => r.PromptIds).ToList(), options, (_, capacity) => tap = new LogitsTap(model, capacity, topK), cancel);
        foreach (var column in columns)
            for (int i = 0; i < rows.Length; i++)
            {
                if (rows[i].Finished) continue;
                // A row still running whose token is not emitted ended on a stop id: it is reported with its log-probability.
                if (!column.Emitted(i)) { rows[i].Stop(column.Token(i), tap); continue; }
                string text = rows[i].Push(column.Token(i), tap);
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

    /// <summary>
    /// The fixed-depth per-step forward (the fast decoder when it applies, else the model's Forward) that also keeps the
    /// step's log-softmax per row, so each sampled token can be given its log-probability and alternatives.
    /// </summary>
    sealed class LogitsTap(ICausalLM model, int capacity, int topK) : IStepForward
    {
        readonly KvCache _cache = new(model.CacheSlots, capacity);
        float[] _logp = [];
        long[] _topIds = [];
        float[] _topLogp = [];
        int _vocab;

        public Tensor Forward(Tensor input, Tensor? keyPadding, int step, IReadOnlyList<bool> finished)
        {
            var logits = (FastDecoder.TryForward(model, input, keyPadding, _cache) ?? model.Forward(input, keyPadding, _cache, lastOnly: true)).squeeze(1);
            using var scope = NewDisposeScope();
            var last = logits.to(ScalarType.Float32).log_softmax(-1).cpu().contiguous();
            _vocab = (int)last.shape[^1];
            _logp = last.data<float>().ToArray();
            if (topK > 0)
            {
                var (values, indices) = last.topk(Math.Min(topK, _vocab), -1);
                _topLogp = values.contiguous().data<float>().ToArray();
                _topIds = indices.contiguous().data<long>().ToArray();
            }
            return logits;
        }

        /// <summary>The last step's log-probability of <paramref name="id"/> in <paramref name="row"/>, with the row's top-k.</summary>
        public TokenLogprob Of(int row, int id)
        {
            int k = topK > 0 ? Math.Min(topK, _vocab) : 0;
            var top = new (int, double)[k];
            for (int j = 0; j < k; j++) top[j] = ((int)_topIds[row * k + j], _topLogp[row * k + j]);
            return new TokenLogprob(id, _logp[(long)row * _vocab + id], top);
        }

        public void Dispose() => _cache.Dispose();
    }

    /// <summary>Per-request decoding state inside a batch.</summary>
    sealed class Row
    {
        readonly TextRequest _request;
        readonly HashSet<int> _stopIds;
        readonly StreamingDecoder _decoder;
        readonly StopStringMatcher _stops;
        readonly System.Text.StringBuilder _text = new();
        readonly List<TokenLogprob>? _logprobs;
        int _tokens;
        bool _stopped, _started;

        public Row(TextRequest request, ITokenizer tokenizer)
        {
            _request = request;
            _stopIds = [.. request.StopIds ?? []];
            _decoder = new StreamingDecoder(tokenizer);
            if (request.Layout == TextLayout.ContinuesPrompt) _decoder.Prime(request.PromptIds);
            _stops = new StopStringMatcher(request.StopStrings);
            _logprobs = request.Logprobs is null ? null : [];
        }

        public bool Finished => _stopped || _tokens >= _request.MaxTokens;

        public string Push(int id, LogitsTap? tap)
        {
            if (Finished) return "";
            if (_logprobs is not null && tap is not null) _logprobs.Add(tap.Of(Index, id));
            if (_stopIds.Contains(id)) { _stopped = true; return ""; }
            _tokens++;
            string piece = _stops.Push(Lead(_decoder.Push(id)));
            _stopped = _stops.Stopped;
            _text.Append(piece);
            return piece;
        }

        /// <summary>The row ended on one of the generation's stop ids (the model's EOS, the tokenizer's stops).</summary>
        public void Stop(int id, LogitsTap? tap)
        {
            if (_logprobs is not null && tap is not null) _logprobs.Add(tap.Of(Index, id));
            _stopped = true;
        }

        /// <summary>This row's index in its batch (set by <see cref="ModelRunner.Run"/>'s caller order).</summary>
        public int Index { get; init; }

        // A chat reply drops one leading space from its first text (see TextLayout.ChatReply).
        string Lead(string piece)
        {
            if (_started || _request.Layout != TextLayout.ChatReply || piece.Length == 0) return piece;
            _started = true;
            return piece[0] == ' ' ? piece[1..] : piece;
        }

        public string Flush()
        {
            string piece = _stops.Push(Lead(_decoder.Flush())) + _stops.Flush();
            _text.Append(piece);
            return piece;
        }

        // A row that ends before its limit ended on a stop id (kept out of the text) or a stop string.
        public TextResult Result() => new(_text.ToString(), _request.PromptIds.Length, _tokens,
            _stopped || _tokens < _request.MaxTokens ? "stop" : "length", Tokens: _logprobs);
    }
}
