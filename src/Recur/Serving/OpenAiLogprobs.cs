using System.Text.Json.Nodes;
using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;
using static TorchSharp.torch;

namespace Recur.Serving;

/// <summary>
/// Log-probabilities of a prompt's own tokens (OpenAI's <c>echo</c> with <c>logprobs</c>, what lm-evaluation-harness's
/// <c>local-completions</c> model asks for to score log-likelihoods) and the OpenAI JSON shapes of token log-probabilities.
/// </summary>
public static class OpenAiLogprobs
{
    /// <summary>Positions scored per logits call: the logits of a long prompt over a large vocabulary do not fit at once.</summary>
    const int Chunk = 128;

    /// <summary>
    /// One forward pass over <paramref name="ids"/> at test-time recurrence <paramref name="recurrences"/> (recurrent
    /// models; s_0 drawn from a generator seeded with <paramref name="seed"/>, as a generation with that seed draws it for
    /// its prompt). Entry p ≥ 1 of the first array is the log-probability of <c>ids[p]</c> after <c>ids[..p]</c> with the
    /// <paramref name="topK"/> most likely tokens there; entry 0 is null (nothing precedes the first token). The second
    /// result is the most likely token after the whole prompt, with its log-probability and alternatives. The numbers are
    /// those of <see cref="Scoring.LogLikelihood"/> (the evaluation's log-likelihoods) for the same ids, T and seed.
    /// </summary>
    public static (TokenLogprob?[] Prompt, TokenLogprob Next) ScorePrompt(ICausalLM model, int[] ids, int? recurrences, long seed, int topK,
        CancellationToken cancel = default)
    {
        if (ids.Length == 0) throw new RecurUserException("the prompt is empty");
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var generator = model is RecurrentModel ? new Generator((ulong)seed) : null;
        ICausalLM at = model is RecurrentModel rm ? rm.At(Recurrence.Fixed(recurrences ?? rm.DefaultRecurrences, generator)) : model;
        var input = tensor(ids.Select(x => (long)x).ToArray(), [1, ids.Length]).to(at.Device);
        var hidden = at.Hidden(input)[0];
        var prompt = new TokenLogprob?[ids.Length];
        TokenLogprob? next = null;
        for (int start = 0; start < ids.Length; start += Chunk)
        {
            cancel.ThrowIfCancellationRequested();
            using var inner = NewDisposeScope();
            int len = Math.Min(Chunk, ids.Length - start);
            var logp = at.Logits(hidden.narrow(0, start, len)).to(ScalarType.Float32).log_softmax(-1).cpu();
            // Position p predicts ids[p + 1]; the last position predicts the token after the prompt.
            var targets = new long[len];
            for (int j = 0; j < len; j++) targets[j] = start + j + 1 < ids.Length ? ids[start + j + 1] : 0;
            var chosen = logp.gather(1, tensor(targets).unsqueeze(1)).squeeze(1).contiguous().data<float>().ToArray();
            var (bestValue, bestIndex) = logp.max(1);
            var best = bestIndex.contiguous().data<long>().ToArray();
            var bestLp = bestValue.contiguous().data<float>().ToArray();
            int k = Math.Min(topK, (int)logp.shape[1]);
            float[] topLp = [];
            long[] topIds = [];
            if (k > 0)
            {
                var (values, indices) = logp.topk(k, 1);
                topLp = values.contiguous().data<float>().ToArray();
                topIds = indices.contiguous().data<long>().ToArray();
            }
            for (int j = 0; j < len; j++)
            {
                var top = Enumerable.Range(0, k).Select(x => ((int)topIds[j * k + x], (double)topLp[j * k + x])).ToArray();
                int p = start + j;
                if (p + 1 < ids.Length) prompt[p + 1] = new TokenLogprob(ids[p + 1], chosen[j], top);
                else next = new TokenLogprob((int)best[j], bestLp[j], top);
            }
        }
        return (prompt, next!);
    }

    /// <summary>
    /// The text each token adds where it stands: the difference between decoding a few tokens before it with and
    /// without it (so SentencePiece's "▁" shows as the space it is, and a token inside a word has none).
    /// </summary>
    public sealed class PieceText(ITokenizer tokenizer)
    {
        const int Window = 4;

        /// <summary>The text of <paramref name="id"/> following <paramref name="before"/> (the ids in front of it).</summary>
        public string Of(IReadOnlyList<int> before, int start, int id)
        {
            int from = Math.Max(0, start - Window);
            if (from >= start) return tokenizer.Decode([id]);
            var window = new List<int>(start - from + 1);
            for (int i = from; i < start; i++) window.Add(before[i]);
            string prefix = tokenizer.Decode(window);
            window.Add(id);
            string all = tokenizer.Decode(window);
            return all.StartsWith(prefix, StringComparison.Ordinal) ? all[prefix.Length..] : tokenizer.Decode([id]);
        }
    }

    /// <summary>
    /// The legacy completions <c>logprobs</c> object for <paramref name="entries"/> (null entries: no log-probability,
    /// the echoed first token): <c>tokens</c>, <c>token_logprobs</c>, <c>top_logprobs</c> (an object of token text to
    /// log-probability holding the top alternatives and the chosen token, as OpenAI documents "up to logprobs + 1"
    /// entries; texts that coincide keep the larger value) and <c>text_offset</c> (where each token starts in the choice's
    /// text, counting from <paramref name="offset"/>).
    /// </summary>
    public static JsonObject Completion(IReadOnlyList<(string Text, TokenLogprob? Logprob, IReadOnlyList<string> TopTexts)> entries, int offset)
    {
        var tokens = new JsonArray();
        var logprobs = new JsonArray();
        var tops = new JsonArray();
        var offsets = new JsonArray();
        foreach (var (text, lp, topTexts) in entries)
        {
            tokens.Add(text);
            offsets.Add(offset);
            offset += text.Length;
            if (lp is null)
            {
                logprobs.Add(null);
                tops.Add(null);
                continue;
            }
            logprobs.Add(lp.Logprob);
            var top = new JsonObject();
            for (int j = 0; j < lp.Top.Count; j++) Put(top, topTexts[j], lp.Top[j].Logprob);
            Put(top, text, lp.Logprob);
            tops.Add(top);
        }
        return new JsonObject { ["tokens"] = tokens, ["token_logprobs"] = logprobs, ["top_logprobs"] = tops, ["text_offset"] = offsets };

        static void Put(JsonObject o, string key, double value)
        {
            if (!o.TryGetPropertyValue(key, out var old) || old is null || old.GetValue<double>() < value) o[key] = value;
        }
    }

    /// <summary>Chat's <c>logprobs</c> object: <c>{"content": [{"token", "logprob", "bytes", "top_logprobs": […]}], "refusal": null}</c>.</summary>
    public static JsonObject Chat(IReadOnlyList<(string Text, TokenLogprob Logprob, IReadOnlyList<string> TopTexts)> entries)
    {
        static JsonArray Bytes(string s) => new([.. System.Text.Encoding.UTF8.GetBytes(s).Select(b => (JsonNode)(int)b)]);
        var content = new JsonArray();
        foreach (var (text, lp, topTexts) in entries)
        {
            var top = new JsonArray();
            for (int j = 0; j < lp.Top.Count; j++)
                top.Add(new JsonObject { ["token"] = topTexts[j], ["logprob"] = lp.Top[j].Logprob, ["bytes"] = Bytes(topTexts[j]) });
            content.Add(new JsonObject { ["token"] = text, ["logprob"] = lp.Logprob, ["bytes"] = Bytes(text), ["top_logprobs"] = top });
        }
        return new JsonObject { ["content"] = content, ["refusal"] = null };
    }
}
