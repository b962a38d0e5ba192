using Ml = Microsoft.ML.Tokenizers;

namespace Recur.Tokenization;

/// <summary>
/// A SentencePiece tokenizer.model (Llama 1/2 style), run by Microsoft.ML.Tokenizers and made to
/// return what Hugging Face's slow, legacy <c>LlamaTokenizer</c> returns.
/// </summary>
/// <remarks>
/// Microsoft.ML.Tokenizers' own BOS/EOS and special-token handling differs from HF in two
/// places, so we do both ourselves and only ask the library for plain SentencePiece pieces:
/// <list type="bullet">
/// <item>it adds no BOS to the empty text, where HF returns <c>[BOS]</c>;</item>
/// <item>HF splits the text on special/added tokens written literally (<c>&lt;/s&gt;</c>) and
/// encodes every remaining piece on its own, each with SentencePiece's dummy-prefix "▁"; the
/// library's special-token mode omits that prefix after a special token.</item>
/// </list>
/// Decoding goes through the library too, except for the removal of the dummy-prefix space,
/// which the library misplaces when the ids start with byte-fallback pieces or a written-out
/// special token (see <see cref="DecodeVerbatim"/>).
/// Added tokens from tokenizer_config.json whose ids lie past the .model's pieces are supported
/// for encoding and decoding (the library cannot know them).
/// </remarks>
public sealed class SentencePieceTokenizer : ITokenizer
{
    private readonly Ml.SentencePieceTokenizer _sp;
    private readonly int _pieceCount;
    private readonly string?[] _idToToken;
    private readonly Dictionary<string, int> _tokenToId;
    // Texts matched literally before SentencePiece runs, longest first so "<s>" never wins over a longer token.
    private readonly (string Content, int Id)[] _splitTokens;
    // Added tokens past the model's pieces: decoded by us, not by the library.
    private readonly Dictionary<int, (string Content, bool Special)> _extraTokens;
    private readonly HashSet<string> _specialNames;
    private readonly bool _addEos;
    private readonly (int Id, string Text)? _sentinel;

    public string SourcePath { get; }
    public int VocabSize => _idToToken.Length;
    public int? BosId { get; }
    public int? EosId { get; }
    public IReadOnlyList<int> StopIds { get; }
    public bool AddBosByDefault { get; }

    /// <summary>Loads <paramref name="path"/> (a SentencePiece .model) with the side files in <paramref name="config"/>.</summary>
    public SentencePieceTokenizer(string path, TokenizerConfig config)
    {
        SourcePath = Path.GetFullPath(path);
        try
        {
            using var stream = File.OpenRead(SourcePath);
            _sp = Ml.LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new RecurUserException(
                $"Cannot read SentencePiece model '{SourcePath}': {e.GetType().Name}: {e.Message}; expected a SentencePiece tokenizer.model (protobuf).", e);
        }

        _tokenToId = new Dictionary<string, int>(_sp.Vocabulary, StringComparer.Ordinal);
        _pieceCount = _tokenToId.Count == 0 ? 0 : _tokenToId.Values.Max() + 1;
        _extraTokens = [];
        _specialNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var added in config.AddedTokens)
        {
            if (added.Id >= _pieceCount)
            {
                _extraTokens[added.Id] = (added.Content, added.Special);
                _tokenToId[added.Content] = added.Id;
            }
            if (added.Special)
                _specialNames.Add(added.Content);
        }

        _idToToken = new string?[Math.Max(_pieceCount, _extraTokens.Count == 0 ? 0 : _extraTokens.Keys.Max() + 1)];
        foreach (var (token, id) in _tokenToId)
            _idToToken[id] = token;

        string unk = config.UnkToken ?? _sp.UnknownToken;
        string bos = config.BosToken ?? _sp.BeginningOfSentenceToken;
        string eos = config.EosToken ?? _sp.EndOfSentenceToken;
        BosId = SpecialTokens.Resolve(bos, "bos_token", SourcePath, TokenToId);
        EosId = SpecialTokens.Resolve(eos, "eos_token", SourcePath, TokenToId);
        _specialNames.UnionWith([unk, bos, eos, .. config.AdditionalSpecialTokens]);

        var split = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var name in _specialNames.Concat(config.AddedTokens.Select(t => t.Content)))
        {
            if (name.Length > 0 && TokenToId(name) is int id)
                split[name] = id;
        }
        _splitTokens = [.. split.Select(kv => (kv.Key, kv.Value)).OrderByDescending(t => t.Key.Length).ThenBy(t => t.Key, StringComparer.Ordinal)];

        _sentinel = FindSentinel();

        // HF LlamaTokenizer defaults: BOS yes, EOS no.
        AddBosByDefault = config.AddBosToken ?? true;
        _addEos = config.AddEosToken ?? false;
        StopIds = SpecialTokens.StopIds(EosId, config.GenerationEosIds, SpecialLookup, VocabSize);
    }

    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        if (addSpecialTokens && AddBosByDefault && BosId is int b)
            ids.Add(b);

        int start = 0;
        for (int i = 0; i < text.Length;)
        {
            if (MatchSplitToken(text, i) is (int length, int id))
            {
                EncodePlain(text[start..i], ids);
                ids.Add(id);
                i += length;
                start = i;
            }
            else
            {
                i++;
            }
        }
        EncodePlain(text[start..], ids);

        if (addSpecialTokens && _addEos && EosId is int e)
            ids.Add(e);
        return [.. ids];
    }

    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var text = new System.Text.StringBuilder();
        var run = new List<int>(ids.Count);
        foreach (int id in ids)
        {
            if (id >= 0 && id < _pieceCount)
            {
                run.Add(id);
            }
            else if (_extraTokens.TryGetValue(id, out var extra))
            {
                // The library cannot decode ids it does not know: close the run and write the
                // added token's text ourselves.
                FlushRun();
                if (!(skipSpecialTokens && extra.Special))
                    text.Append(extra.Content);
            }
        }
        FlushRun();

        // SentencePiece's rule: the dummy-prefix space is removed once, from the first piece
        // that shows any text (skipped special tokens show none). A space can only come from
        // "▁" here, so a leading ' ' in the joined text is exactly that piece's prefix.
        if (_sp.AddDummyPrefix && text.Length > 0 && text[0] == ' ')
            text.Remove(0, 1);
        return text.ToString();

        void FlushRun()
        {
            if (run.Count == 0)
                return;
            text.Append(DecodeVerbatim(run, !skipSpecialTokens));
            run.Clear();
        }
    }

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public int? TokenToId(string token) => _tokenToId.TryGetValue(token, out int id) ? id : null;

    public void Dispose()
    {
        // Managed only; nothing to release.
    }

    private int? SpecialLookup(string token) => _specialNames.Contains(token) ? TokenToId(token) : null;

    private (int Length, int Id)? MatchSplitToken(string text, int at)
    {
        foreach (var (content, id) in _splitTokens)
        {
            if (text.AsSpan(at).StartsWith(content, StringComparison.Ordinal))
                return (content.Length, id);
        }
        return null;
    }

    // Decodes with every "▁" turned into a space, none dropped. The library drops the leading
    // space of the first piece itself, but gets it wrong when the ids start with byte-fallback
    // pieces (<0x0A>▁math gives "\nmath", SentencePiece gives "\n math") or with a special
    // token written out; putting a plain sentinel piece first switches that logic off, and we
    // apply SentencePiece's rule ourselves in Decode.
    private string DecodeVerbatim(List<int> run, bool considerSpecialTokens)
    {
        if (_sentinel is not { } s)
            return _sp.Decode(run, considerSpecialTokens);
        run.Insert(0, s.Id);
        string text = _sp.Decode(run, considerSpecialTokens);
        run.RemoveAt(0);
        return text.StartsWith(s.Text, StringComparison.Ordinal) ? text[s.Text.Length..] : _sp.Decode(run, considerSpecialTokens);
    }

    // A one-character ASCII piece without "▁" (e.g. "a") that decodes to itself.
    private (int Id, string Text)? FindSentinel()
    {
        foreach (string candidate in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".Select(c => c.ToString()))
        {
            if (_sp.Vocabulary.TryGetValue(candidate, out int id) && _sp.Decode([id]) == candidate)
                return (id, candidate);
        }
        return null;
    }

    private void EncodePlain(string piece, List<int> ids)
    {
        if (piece.Length == 0)
            return;
        ids.AddRange(_sp.EncodeToIds(piece, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: true, considerNormalization: true));
    }
}
