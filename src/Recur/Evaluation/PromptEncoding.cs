using Recur.Tokenization;

namespace Recur.Evaluation;

/// <summary>
/// How evaluation text becomes token ids, as lm-evaluation-harness's HF backend does it with
/// <c>add_bos_token=True</c> (METHOD §8, mcleish7/retrofitting-recurrence:shells/eval.sh).
/// </summary>
/// <remarks>
/// Text is encoded without the tokenizer's own special tokens and BOS is put in front explicitly, once.
/// For Llama-family tokenizers this is exactly what <c>tokenizer(text)</c> gives; it also keeps a tokenizer
/// that would append EOS (<c>add_eos_token</c>) from ending every prompt with EOS, and adds BOS for
/// tokenizers whose post-processor does not (the harness's "always add BOS, never twice").
/// </remarks>
public static class PromptEncoding
{
    /// <summary>BOS, or — for a tokenizer without one — EOS (lm-eval's <c>prefix_token_id</c>), or null.</summary>
    public static int? PrefixToken(ITokenizer tokenizer) => tokenizer.BosId ?? tokenizer.EosId;

    /// <summary>BOS + the text's ids (no BOS when the tokenizer has none, nor a second one when the text starts with it).</summary>
    public static int[] EncodePrompt(ITokenizer tokenizer, string text)
    {
        var ids = tokenizer.Encode(text, addSpecialTokens: false);
        if (tokenizer.BosId is int bos && (ids.Length == 0 || ids[0] != bos)) return [bos, .. ids];
        if (ids.Length > 0) return ids;
        // An empty prompt without BOS still needs one token to condition on.
        return PrefixToken(tokenizer) is int p ? [p] : throw new RecurUserException($"{tokenizer.SourcePath}: an empty prompt needs a BOS or EOS token, and this tokenizer has neither");
    }

    /// <summary>
    /// lm-eval's <c>_encode_pair</c> (EleutherAI/lm-evaluation-harness:lm_eval/api/model.py): trailing white space
    /// of the context moves to the front of the continuation; the continuation's ids are those of
    /// <c>encode(context + continuation)</c> beyond the length of <c>encode(context)</c>, so a word that merges
    /// with its leading space is scored as the model would write it. The context gets BOS in front; an empty
    /// context is BOS alone (EOS for a tokenizer without BOS, as lm-eval's <c>prefix_token_id</c>).
    /// </summary>
    public static (int[] Context, int[] Continuation) EncodePair(ITokenizer tokenizer, string context, string continuation)
    {
        int spaces = TrailingWhiteSpace(context);
        if (spaces > 0)
        {
            continuation = context[^spaces..] + continuation;
            context = context[..^spaces];
        }
        int[] contextIds, continuationIds;
        if (context.Length == 0)
        {
            contextIds = [];
            continuationIds = tokenizer.Encode(continuation, addSpecialTokens: false);
        }
        else
        {
            var whole = tokenizer.Encode(context + continuation, addSpecialTokens: false);
            contextIds = tokenizer.Encode(context, addSpecialTokens: false);
            continuationIds = whole.Length > contextIds.Length ? whole[contextIds.Length..] : [];
            // Only when the joint encoding is no longer than the context's (a continuation absorbed by a merge
            // across the boundary) is there nothing to score; the continuation's own ids are then the honest answer.
            if (continuationIds.Length == 0) continuationIds = tokenizer.Encode(continuation, addSpecialTokens: false);
        }
        if (continuationIds.Length == 0)
            throw new RecurUserException($"a log-likelihood request has a continuation that encodes to no tokens: \"{Shorten(continuation)}\"");
        int? prefix = context.Length == 0 ? PrefixToken(tokenizer) : tokenizer.BosId;
        if (context.Length == 0 && prefix is null)
            throw new RecurUserException($"{tokenizer.SourcePath}: scoring with an empty context needs a BOS or EOS token, and this tokenizer has neither");
        if (prefix is int p && (contextIds.Length == 0 || contextIds[0] != p)) contextIds = [p, .. contextIds];
        return (contextIds, continuationIds);
    }

    /// <summary>Characters Python's <c>str.rstrip()</c> would remove (it also strips U+001C..U+001F).</summary>
    public static int TrailingWhiteSpace(string s)
    {
        int n = 0;
        while (n < s.Length && (char.IsWhiteSpace(s[^(n + 1)]) || s[^(n + 1)] is >= '\x1c' and <= '\x1f')) n++;
        return n;
    }

    static string Shorten(string s) => s.Length <= 40 ? s : s[..40] + "…";
}
