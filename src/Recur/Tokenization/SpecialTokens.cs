namespace Recur.Tokenization;

/// <summary>Rules shared by both tokenizer kinds for picking BOS/EOS and the stop ids.</summary>
internal static class SpecialTokens
{
    // Used only when no tokenizer_config.json / special_tokens_map.json names BOS or EOS.
    public static readonly string[] BosGuesses = ["<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"];
    public static readonly string[] EosGuesses = ["<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"];

    // End-of-turn / end-of-text markers of common chat formats: generation must stop on them
    // even when the configured EOS is another token (Llama 3 instruct ends turns with <|eot_id|>).
    private static readonly string[] StopMarkers =
        ["<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<end_of_turn>"];

    /// <summary>Resolves a configured token name to its id, or fails naming the config file.</summary>
    public static int? Resolve(string? name, string what, string tokenizerPath, Func<string, int?> lookup)
    {
        if (name is null)
            return null;
        return lookup(name) ?? throw new RecurUserException(
            $"The {what} \"{name}\" named by the tokenizer_config.json/special_tokens_map.json beside '{tokenizerPath}' is not in that tokenizer's vocabulary.");
    }

    public static int? Guess(IEnumerable<string> names, Func<string, int?> lookup)
    {
        foreach (var n in names)
        {
            if (lookup(n) is int id)
                return id;
        }
        return null;
    }

    public static IReadOnlyList<int> StopIds(int? eosId, IEnumerable<int> generationEosIds, Func<string, int?> specialLookup, int vocabSize)
    {
        var ids = new List<int>();
        void Add(int id)
        {
            if (id >= 0 && id < vocabSize && !ids.Contains(id))
                ids.Add(id);
        }
        if (eosId is int e)
            Add(e);
        foreach (var id in generationEosIds)
            Add(id);
        foreach (var marker in StopMarkers)
        {
            if (specialLookup(marker) is int id)
                Add(id);
        }
        return ids;
    }
}
