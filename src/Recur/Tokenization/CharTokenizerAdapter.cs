using Recur.Data;

namespace Recur.Tokenization;

/// <summary>
/// <see cref="CharTokenizer"/> (the demo's character tokenizer, stored as <c>char_tokenizer.json</c>) behind
/// <see cref="ITokenizer"/>, so generation, chat and evaluation treat it like any other tokenizer.
/// BOS is added by default, EOS is not (as Llama tokenizers do).
/// </summary>
public sealed class CharTokenizerAdapter(CharTokenizer inner, string sourcePath) : ITokenizer
{
    public const string FileName = "char_tokenizer.json";

    public CharTokenizer Inner => inner;
    public string SourcePath => sourcePath;
    public int VocabSize => inner.VocabSize;
    public int? BosId => inner.BosId;
    public int? EosId => inner.EosId;
    public IReadOnlyList<int> StopIds => [inner.EosId];
    public bool AddBosByDefault => true;

    public int[] Encode(string text, bool addSpecialTokens = true) => inner.Encode(text, addSpecialTokens);

    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = true)
    {
        var valid = ids.Where(i => i >= 0 && i < inner.VocabSize);
        return skipSpecialTokens ? inner.Decode(valid) : string.Concat(valid.Select(inner.Token));
    }

    public string? IdToToken(int id) => id >= 0 && id < inner.VocabSize ? inner.Token(id) : null;

    public int? TokenToId(string token)
    {
        for (int i = 0; i < inner.VocabSize; i++) if (inner.Token(i) == token) return i;
        return null;
    }

    public void Dispose() { }
}
