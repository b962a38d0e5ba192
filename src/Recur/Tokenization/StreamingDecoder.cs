namespace Recur.Tokenization;

/// <summary>
/// Turns generated ids into text as they arrive: <see cref="Push"/> one id at a time and get back
/// only the newly completed text; <see cref="Flush"/> at the end. The pieces concatenate to
/// <c>tokenizer.Decode(allIds, skipSpecialTokens)</c>.
/// </summary>
/// <remarks>
/// Decoding ids one by one is wrong in two ways: a character whose UTF-8 bytes are spread over
/// several byte tokens (<c>&lt;0xF0&gt;&lt;0x9F&gt;...</c>, or byte-level BPE pieces) decodes
/// to U+FFFD until its last byte arrives, and SentencePiece decoders drop the leading space of
/// the first token of whatever they decode. So every step decodes a short window that starts
/// one already-emitted token earlier (the "prefix") and emits the difference between the window
/// with and without the new ids; while the window's text ends in U+FFFD it waits for more ids.
/// </remarks>
public sealed class StreamingDecoder
{
    private const char Replacement = '\uFFFD';
    private readonly ITokenizer _tokenizer;
    private readonly bool _skipSpecialTokens;
    private readonly List<int> _ids = [];
    private int _prefixOffset; // first id of the window, already emitted, gives context
    private int _readOffset;   // ids before this one have all been emitted

    public StreamingDecoder(ITokenizer tokenizer, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>All ids pushed since construction or the last <see cref="Reset"/>.</summary>
    public IReadOnlyList<int> Ids => _ids;

    /// <summary>Adds one id and returns the text it completes (often empty while a character is incomplete).</summary>
    public string Push(int id)
    {
        _ids.Add(id);
        string prefix = DecodeRange(_prefixOffset, _readOffset);
        string window = DecodeRange(_prefixOffset, _ids.Count);
        if (window.Length <= prefix.Length || window[^1] == Replacement || !window.StartsWith(prefix, StringComparison.Ordinal))
            return string.Empty;

        _prefixOffset = _readOffset;
        _readOffset = _ids.Count;
        return window[prefix.Length..];
    }

    /// <summary>
    /// Returns whatever is still held back (e.g. a trailing incomplete character, as U+FFFD) and
    /// marks it emitted. Call once generation ends.
    /// </summary>
    public string Flush()
    {
        if (_readOffset == _ids.Count)
            return string.Empty;
        string prefix = DecodeRange(_prefixOffset, _readOffset);
        string window = DecodeRange(_prefixOffset, _ids.Count);
        _prefixOffset = _readOffset;
        _readOffset = _ids.Count;
        return window.StartsWith(prefix, StringComparison.Ordinal) ? window[prefix.Length..] : window;
    }

    /// <summary>
    /// Starts after <paramref name="context"/> (e.g. the prompt) as if its text had been emitted already: the first
    /// piece then comes out as it continues that text, with the leading space a SentencePiece decoder would drop
    /// from a text's first piece. A few trailing ids suffice as context (as text-generation-inference keeps five).
    /// </summary>
    public void Prime(IReadOnlyList<int> context, int keep = 6)
    {
        ArgumentNullException.ThrowIfNull(context);
        Reset();
        for (int i = Math.Max(0, context.Count - keep); i < context.Count; i++) _ids.Add(context[i]);
        _readOffset = _ids.Count;
    }

    /// <summary>Forgets all ids, e.g. before the next prompt.</summary>
    public void Reset()
    {
        _ids.Clear();
        _prefixOffset = 0;
        _readOffset = 0;
    }

    private string DecodeRange(int from, int to) =>
        from >= to ? string.Empty : _tokenizer.Decode(_ids.GetRange(from, to - from), _skipSpecialTokens);
}
