using System.Text;
using System.Text.Json;

namespace Recur.Data;

/// <summary>
/// A character-level tokenizer for the synthetic-math demo, where no pretrained tokenizer can be
/// downloaded. Ids 0..3 are &lt;pad&gt;, &lt;bos&gt;, &lt;eos&gt;, &lt;unk&gt;; then one id per character of a fixed
/// set (by default tab, newline and printable ASCII, which covers everything <see cref="SynthMath"/> emits).
/// Any other character, including one outside the BMP, encodes to one &lt;unk&gt;.
/// </summary>
/// <remarks>
/// File format (<c>tokenizer.json</c>-like, our own): a UTF-8 JSON object
/// <code>
/// { "format": "recur-char-tokenizer", "version": 1,
///   "special_tokens": { "pad": "&lt;pad&gt;", "bos": "&lt;bos&gt;", "eos": "&lt;eos&gt;", "unk": "&lt;unk&gt;" },
///   "vocab": { "&lt;pad&gt;": 0, "&lt;bos&gt;": 1, "&lt;eos&gt;": 2, "&lt;unk&gt;": 3, "\t": 4, "\n": 5, " ": 6, ... } }
/// </code>
/// <c>vocab</c> maps each token to its id, like the <c>model.vocab</c> of a Hugging Face tokenizer.json;
/// ids must be exactly 0..V-1, each non-special token is a single character, and the four special tokens
/// named in <c>special_tokens</c> must be in <c>vocab</c>. Ids are not fixed by the format: they are read from the file.
/// </remarks>
public sealed class CharTokenizer
{
    public const string FormatName = "recur-char-tokenizer";
    public const int FormatVersion = 1;

    /// <summary>Tab, newline and printable ASCII (0x20..0x7E).</summary>
    public static readonly string DefaultCharacters = "\t" + SynthMath.Characters;

    readonly string[] _tokens;                  // id → token text (special tokens by name)
    readonly Dictionary<char, int> _ids = [];   // character → id

    public int VocabSize => _tokens.Length;
    public int PadId { get; }
    public int BosId { get; }
    public int EosId { get; }
    public int UnkId { get; }

    /// <summary>The default tokenizer: special tokens 0..3, then <see cref="DefaultCharacters"/> in order.</summary>
    public CharTokenizer() : this(DefaultCharacters) { }

    /// <summary>Special tokens 0..3, then one id per distinct character of <paramref name="characters"/>, in order of first appearance.</summary>
    public CharTokenizer(string characters)
    {
        var tokens = new List<string> { "<pad>", "<bos>", "<eos>", "<unk>" };
        foreach (char ch in characters)
        {
            if (char.IsSurrogate(ch)) throw new ArgumentException("characters must be in the Basic Multilingual Plane (no surrogates)", nameof(characters));
            if (_ids.TryAdd(ch, tokens.Count)) tokens.Add(ch.ToString());
        }
        _tokens = [.. tokens];
        (PadId, BosId, EosId, UnkId) = (0, 1, 2, 3);
    }

    CharTokenizer(string[] tokens, Dictionary<char, int> ids, int pad, int bos, int eos, int unk)
    {
        _tokens = tokens;
        _ids = ids;
        (PadId, BosId, EosId, UnkId) = (pad, bos, eos, unk);
    }

    /// <summary>One id per character (one &lt;unk&gt; per unknown character or surrogate pair), optionally preceded by BOS. No EOS is added.</summary>
    public int[] Encode(string text, bool addBos)
    {
        var ids = new List<int>(text.Length + 1);
        if (addBos) ids.Add(BosId);
        foreach (var rune in text.EnumerateRunes())
            ids.Add(rune.IsBmp && _ids.TryGetValue((char)rune.Value, out int id) ? id : UnkId);
        return [.. ids];
    }

    /// <summary>The text of the ids; pad, BOS and EOS are dropped and &lt;unk&gt; becomes U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_tokens.Length) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside the vocabulary [0, {_tokens.Length})");
            if (id == PadId || id == BosId || id == EosId) continue;
            if (id == UnkId) sb.Append('\uFFFD');
            else sb.Append(_tokens[id]);
        }
        return sb.ToString();
    }

    /// <summary>The token text of an id (special tokens by name, e.g. "&lt;eos&gt;").</summary>
    public string Token(int id) => _tokens[id];

    public void Save(string path) =>
        Recur.Checkpoints.AtomicFile.Write(path, fs =>
        {
            // The relaxed encoder keeps "<pad>" readable; control characters are still escaped ("\t", "\n").
            using var w = new Utf8JsonWriter(fs, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
            w.WriteStartObject();
            w.WriteString("format", FormatName);
            w.WriteNumber("version", FormatVersion);
            w.WriteStartObject("special_tokens");
            w.WriteString("pad", _tokens[PadId]);
            w.WriteString("bos", _tokens[BosId]);
            w.WriteString("eos", _tokens[EosId]);
            w.WriteString("unk", _tokens[UnkId]);
            w.WriteEndObject();
            w.WriteStartObject("vocab");
            for (int i = 0; i < _tokens.Length; i++) w.WriteNumber(_tokens[i], i);
            w.WriteEndObject();
            w.WriteEndObject();
        });

    public static CharTokenizer Load(string path)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new RecurUserException($"{path}: not valid JSON ({e.Message})", e); }
        catch (FileNotFoundException e) { throw new RecurUserException($"{path}: tokenizer file not found", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new RecurUserException($"{path}: expected a JSON object");
            string? format = root.TryGetProperty("format", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString() : null;
            if (format != FormatName) throw new RecurUserException($"{path}: \"format\" must be \"{FormatName}\" (got {(format is null ? "none" : $"\"{format}\"")})");
            if (!root.TryGetProperty("version", out var v) || !v.TryGetInt32(out int version) || version != FormatVersion)
                throw new RecurUserException($"{path}: \"version\" must be {FormatVersion}");
            if (!root.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw new RecurUserException($"{path}: \"vocab\" must be an object mapping token to id");

            var byId = new Dictionary<int, string>();
            foreach (var entry in vocab.EnumerateObject())
            {
                if (!entry.Value.TryGetInt32(out int id) || id < 0) throw new RecurUserException($"{path}: vocab[\"{entry.Name}\"] must be a non-negative integer id");
                if (!byId.TryAdd(id, entry.Name)) throw new RecurUserException($"{path}: vocab id {id} is used by both \"{byId[id]}\" and \"{entry.Name}\"");
            }
            for (int i = 0; i < byId.Count; i++)
                if (!byId.ContainsKey(i)) throw new RecurUserException($"{path}: vocab ids must be exactly 0..{byId.Count - 1} (id {i} is missing)");
            var tokens = Enumerable.Range(0, byId.Count).Select(i => byId[i]).ToArray();
            var tokenToId = tokens.Select((t, i) => (t, i)).ToDictionary(x => x.t, x => x.i, StringComparer.Ordinal);

            if (!root.TryGetProperty("special_tokens", out var sp) || sp.ValueKind != JsonValueKind.Object)
                throw new RecurUserException($"{path}: \"special_tokens\" must be an object with pad, bos, eos and unk");
            var names = new string[4];
            var specialIds = new int[4];
            string[] roles = ["pad", "bos", "eos", "unk"];
            for (int r = 0; r < 4; r++)
            {
                if (!sp.TryGetProperty(roles[r], out var s) || s.ValueKind != JsonValueKind.String)
                    throw new RecurUserException($"{path}: special_tokens.{roles[r]} must be a token string");
                names[r] = s.GetString()!;
                if (!tokenToId.TryGetValue(names[r], out specialIds[r]))
                    throw new RecurUserException($"{path}: special_tokens.{roles[r]} \"{names[r]}\" is not in vocab");
            }
            if (specialIds.Distinct().Count() != 4) throw new RecurUserException($"{path}: pad, bos, eos and unk must be four different tokens");

            var ids = new Dictionary<char, int>();
            for (int i = 0; i < tokens.Length; i++)
            {
                if (specialIds.Contains(i)) continue;
                if (tokens[i].Length != 1 || char.IsSurrogate(tokens[i][0]))
                    throw new RecurUserException($"{path}: vocab token \"{tokens[i]}\" (id {i}) must be a single character or one of the special tokens");
                ids[tokens[i][0]] = i;
            }
            return new CharTokenizer(tokens, ids, specialIds[0], specialIds[1], specialIds[2], specialIds[3]);
        }
    }
}
