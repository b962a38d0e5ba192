namespace Recur.Tokenization;

/// <summary>
/// A text tokenizer for a Llama-family model. Ids, BOS handling and decoded text match what the
/// Hugging Face reference returns for the same files: <c>tokenizer(text)</c> /
/// <c>tokenizer.encode(text, add_special_tokens=...)</c> and
/// <c>tokenizer.decode(ids, skip_special_tokens=...)</c> (without transformers' optional
/// <c>clean_up_tokenization_spaces</c> pass, see docs/tokenizers.md).
/// </summary>
public interface ITokenizer : IDisposable
{
    /// <summary>The file the tokenizer was loaded from (tokenizer.json or tokenizer.model).</summary>
    string SourcePath { get; }

    /// <summary>
    /// Highest token id + 1, added/special tokens included (HF's <c>len(tokenizer)</c>). A model's
    /// embedding must have at least this many rows.
    /// </summary>
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, or null when the tokenizer has none.</summary>
    int? BosId { get; }

    /// <summary>End-of-sequence id, or null when the tokenizer has none.</summary>
    int? EosId { get; }

    /// <summary>
    /// Ids that end generation: EOS, the ids of generation_config.json's <c>eos_token_id</c> when
    /// that file is present, and well-known end markers such as <c>&lt;|eot_id|&gt;</c> and
    /// <c>&lt;|end_of_text|&gt;</c> when the vocabulary has them as special tokens.
    /// </summary>
    IReadOnlyList<int> StopIds { get; }

    /// <summary>Whether <see cref="Encode"/> with <c>addSpecialTokens: true</c> prepends BOS.</summary>
    bool AddBosByDefault { get; }

    /// <summary>
    /// Token ids of <paramref name="text"/>. With <paramref name="addSpecialTokens"/> the
    /// tokenizer's own BOS/EOS policy applies (post-processor / tokenizer_config.json). Special
    /// tokens written literally in the text (e.g. <c>&lt;/s&gt;</c>) become their ids, as in HF.
    /// </summary>
    int[] Encode(string text, bool addSpecialTokens = true);

    /// <summary>
    /// Text of <paramref name="ids"/>. Ids that name no token (negative, or past the vocabulary)
    /// are ignored, as HF's decoder does.
    /// </summary>
    string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = true);

    /// <summary>The token string of <paramref name="id"/> (e.g. <c>▁Hello</c>, <c>&lt;0xF0&gt;</c>), or null.</summary>
    string? IdToToken(int id);

    /// <summary>The id of the token string <paramref name="token"/>, or null when it is not in the vocabulary.</summary>
    int? TokenToId(string token);
}
