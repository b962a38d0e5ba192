using Recur.Engine;
using Recur.Model;
using Recur.Tasks;
using Recur.Tokenization;

namespace Recur.Evaluation;

/// <summary>Why a generated row ended.</summary>
public enum FinishReason
{
    /// <summary>One of the stop sequences appeared in the decoded text.</summary>
    StopSequence,
    /// <summary>The model produced an EOS / stop id.</summary>
    Eos,
    /// <summary>The token budget ran out.</summary>
    Length,
}

/// <summary>One generated continuation: its text (cut before the first stop sequence), its ids, and why it ended.</summary>
/// <param name="PromptTokens">Prompt length in tokens after any left truncation.</param>
/// <param name="Truncated">Whether the prompt was cut from the left to fit the model's context.</param>
public sealed record Generated(string Text, IReadOnlyList<int> Ids, FinishReason Finish, int PromptTokens, bool Truncated);

/// <summary>
/// <see cref="IGenerator"/> for an <see cref="ICausalLM"/>: greedy, batched, KV-cached generation with left
/// padding, as lm-evaluation-harness's HF backend runs <c>generate_until</c> (METHOD §8).
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Prompts are BOS + text (<see cref="PromptEncoding.EncodePrompt"/>), sorted longest first so each
/// batch pads little and the largest batch comes first, then answered in input order.</item>
/// <item>A row ends at an EOS / stop id (the model's and the tokenizer's) or as soon as one of the stop
/// sequences appears in its decoded text; the text is cut before the first stop sequence, and only the
/// generated tokens are searched, never the prompt (lm-eval's <c>StopSequenceCriteria</c>).</item>
/// <item>A prompt longer than the model's context minus <c>maxNewTokens</c> is cut from the left, as the harness
/// does (<c>max_length - max_gen_toks</c>); <see cref="TruncatedPrompts"/> counts them.</item>
/// <item>Recurrent models draw s_0 per forward call for the whole batch, so their outputs depend on which prompts
/// share a batch: a fixed batch size and seed reproduce a run exactly, a different batch size changes the
/// noise (lm-eval with a Huginn model behaves the same way).</item>
/// </list>
/// </remarks>
public sealed class ModelGenerator : IGenerator
{
    readonly ICausalLM _model;
    readonly ITokenizer _tokenizer;
    readonly IReadOnlyCollection<int> _stopIds;

    public ModelGenerator(ICausalLM model, ITokenizer tokenizer, int batchSize = 32)
    {
        if (batchSize < 1) throw new RecurUserException($"batch size must be at least 1 (got {batchSize})");
        _model = model;
        _tokenizer = tokenizer;
        BatchSize = batchSize;
        _stopIds = new HashSet<int>(model.EosTokenIds.Concat(tokenizer.StopIds));
    }

    public int BatchSize { get; }

    /// <summary>(prompts done, prompts total) after each batch of a <see cref="Generate"/> call.</summary>
    public Action<int, int>? Progress { get; set; }

    public CancellationToken Cancel { get; set; }

    /// <summary>Adaptive per-token recurrence (experimental, recurrent models only); null runs the model's fixed T.</summary>
    public AdaptiveOptions? Adaptive { get; set; }

    /// <summary>Iterations spent by adaptive generation so far (all calls); empty when <see cref="Adaptive"/> is null.</summary>
    public AdaptiveStats AdaptiveStats { get; } = new();

    /// <summary>Prompts cut from the left so far (all calls).</summary>
    public int TruncatedPrompts { get; private set; }

    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, IReadOnlyList<string> stopSequences, int maxNewTokens) =>
        GenerateDetailed(prompts, stopSequences, maxNewTokens).Select(g => g.Text).ToList();

    /// <summary>Like <see cref="Generate"/>, with the ids and finish reason of every row.</summary>
    public IReadOnlyList<Generated> GenerateDetailed(IReadOnlyList<string> prompts, IReadOnlyList<string> stopSequences, int maxNewTokens)
    {
        if (maxNewTokens < 1) throw RecurUserException.About($"MaxNewTokens must be at least 1 (got {maxNewTokens})", "MaxNewTokens");
        int maxPrompt = _model.MaxPositions - maxNewTokens;
        if (maxPrompt < 1)
            throw RecurUserException.About($"MaxNewTokens {maxNewTokens} leaves no room for a prompt in the model's context of {_model.MaxPositions} positions", "MaxNewTokens");
        var encoded = prompts.Select(p => PromptEncoding.EncodePrompt(_tokenizer, p)).ToArray();
        var order = Enumerable.Range(0, encoded.Length).OrderByDescending(i => encoded[i].Length).ThenBy(i => i).ToArray();
        var results = new Generated[encoded.Length];
        int done = 0;
        for (int start = 0; start < order.Length; start += BatchSize)
        {
            var idx = order.Skip(start).Take(BatchSize).ToArray();
            var batch = new int[idx.Length][];
            var truncated = new bool[idx.Length];
            for (int r = 0; r < idx.Length; r++)
            {
                var ids = encoded[idx[r]];
                truncated[r] = ids.Length > maxPrompt;
                batch[r] = truncated[r] ? ids[^maxPrompt..] : ids;
            }

            // Each row's decoded text goes through the stop-string matcher as it grows; a row ends when a stop appears.
            var decoders = idx.Select(_ => new StreamingDecoder(_tokenizer)).ToArray();
            var matchers = idx.Select(_ => new StopStringMatcher(stopSequences)).ToArray();
            var genOptions = new GenerationOptions(maxNewTokens, StopIds: _stopIds);
            var columns = Adaptive is null
                ? Generation.Stream(_model, batch, genOptions, Cancel)
                : AdaptiveGeneration.Stream(_model, batch, genOptions, Adaptive, AdaptiveStats, Cancel);
            var outputs = Generation.Collect(idx.Length, stopSequences.Count == 0 ? columns : WithStops(columns, decoders, matchers));
            for (int r = 0; r < idx.Length; r++)
            {
                var full = _tokenizer.Decode(outputs[r]);
                var text = StopStringMatcher.Cut(full, stopSequences);
                var finish = matchers[r].Stopped || text.Length < full.Length ? FinishReason.StopSequence
                    : outputs[r].Count < maxNewTokens ? FinishReason.Eos : FinishReason.Length;
                results[idx[r]] = new Generated(text, outputs[r], finish, batch[r].Length, truncated[r]);
                if (truncated[r]) TruncatedPrompts++;
            }
            done += idx.Length;
            Progress?.Invoke(done, encoded.Length);
        }
        return results;
    }

    /// <summary>Passes the columns on, ending each row whose decoded text reached a stop sequence.</summary>
    static IEnumerable<TokenColumn> WithStops(IEnumerable<TokenColumn> columns, StreamingDecoder[] decoders, StopStringMatcher[] matchers)
    {
        foreach (var col in columns)
        {
            for (int r = 0; r < col.Batch; r++)
            {
                if (!col.Emitted(r)) continue;
                matchers[r].Push(decoders[r].Push(col.Token(r)));
                if (matchers[r].Stopped) col.Finish(r);
            }
            yield return col;
        }
    }
}
