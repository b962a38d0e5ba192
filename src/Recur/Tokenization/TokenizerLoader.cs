namespace Recur.Tokenization;

/// <summary>Finds and opens the tokenizer of a model.</summary>
public static class TokenizerLoader
{
    /// <summary>
    /// Opens a tokenizer from <paramref name="path"/>: a model folder (tokenizer.json is
    /// preferred over tokenizer.model), a tokenizer.json or a SentencePiece .model file. The
    /// tokenizer_config.json, special_tokens_map.json and generation_config.json beside the file
    /// are honoured. Every problem with the input throws <see cref="RecurUserException"/> naming
    /// the file and what was expected.
    /// </summary>
    public static ITokenizer Load(string path)
    {
        string file = ResolveFile(path);
        if (Path.GetFileName(file) == CharTokenizerAdapter.FileName)
            return new CharTokenizerAdapter(Data.CharTokenizer.Load(file), file);
        var config = TokenizerConfig.ReadBeside(file);
        return IsSentencePiece(file)
            ? new SentencePieceTokenizer(file, config)
            : new HfTokenizer(file, config);
    }

    /// <summary>The tokenizer file that <see cref="Load"/> would open for <paramref name="path"/>.</summary>
    public static string ResolveFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path.Trim().Length == 0)
            throw new RecurUserException("No tokenizer path given; expected a model folder, a tokenizer.json or a tokenizer.model file.");

        string full = Path.GetFullPath(path);
        if (Directory.Exists(full))
        {
            if (TryResolve(full) is { } found) return found;
            throw new RecurUserException($"No tokenizer in folder '{full}': expected a tokenizer.json or a tokenizer.model file there.");
        }

        if (!File.Exists(full))
            throw new RecurUserException($"Tokenizer not found: '{full}' does not exist; expected a model folder, a tokenizer.json or a tokenizer.model file.");

        string fileName = Path.GetFileName(full);
        if (fileName is "tokenizer_config.json" or "special_tokens_map.json" or "generation_config.json" or "config.json")
            throw new RecurUserException($"'{full}' is a side file, not a tokenizer; expected tokenizer.json or tokenizer.model (or just their folder).");
        if (fileName == CharTokenizerAdapter.FileName) return full;
        if (!full.EndsWith(".json", StringComparison.OrdinalIgnoreCase) && !IsSentencePiece(full))
            throw new RecurUserException($"Cannot tell the tokenizer format of '{full}'; expected a tokenizer.json (Hugging Face) or a .model file (SentencePiece).");
        return full;
    }

    /// <summary>
    /// The tokenizer of a model: <paramref name="given"/> when the user named one, else the model folder when a tokenizer lies
    /// beside the weights, else null. The one rule of the library facade and every CLI verb.
    /// </summary>
    public static string? PathFor(string modelPath, string? given) =>
        given ?? (Directory.Exists(modelPath) && TryResolve(modelPath) is not null ? modelPath : null);

    /// <summary>The tokenizer file in a model folder, or null when the folder has none.</summary>
    public static string? TryResolve(string folder)
    {
        foreach (string name in new[] { "tokenizer.json", "tokenizer.model", CharTokenizerAdapter.FileName })
        {
            string candidate = Path.Combine(folder, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>
    /// Throws when <paramref name="tokenizer"/> can produce ids that the model's embedding has no
    /// row for, i.e. its largest id is at least <paramref name="modelVocabSize"/>. A model may
    /// have more rows than the tokenizer has ids (padded embeddings); that is fine.
    /// </summary>
    public static void CheckFitsModel(ITokenizer tokenizer, int modelVocabSize, string tokenizerPath)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        if (modelVocabSize <= 0)
            throw new ArgumentOutOfRangeException(nameof(modelVocabSize), modelVocabSize, "The model's vocabulary size must be positive.");
        int maxId = tokenizer.VocabSize - 1;
        if (maxId >= modelVocabSize)
            throw new RecurUserException(
                $"Tokenizer '{tokenizerPath}' does not fit the model: its ids go up to {maxId} but the model's vocab_size is {modelVocabSize}; use the tokenizer that belongs to this model.");
    }

    private static bool IsSentencePiece(string file) => file.EndsWith(".model", StringComparison.OrdinalIgnoreCase);
}
