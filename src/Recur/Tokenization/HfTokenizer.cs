using System.Text.Json;
using System.Text.Json.Nodes;
using Native = Tokenizers.DotNet;

namespace Recur.Tokenization;

/// <summary>
/// A Hugging Face tokenizer.json, run by the Rust <c>tokenizers</c> library through
/// Tokenizers.DotNet, so ids are those of transformers' fast tokenizers.
/// </summary>
/// <remarks>
/// Tokenizers.DotNet 1.4.1 exposes only <c>Encode(text)</c>, which always runs the
/// post-processor (<c>add_special_tokens=true</c>), and <c>Decode(ids)</c>, which always skips
/// special tokens. We get the other two modes from the same library by loading a second,
/// "plain" copy of the file (lazily, on first need) in which the post-processor is removed and no
/// added token is flagged special: encoding with it equals <c>add_special_tokens=false</c> and
/// decoding with it equals <c>skip_special_tokens=false</c>. Vocabulary lookups
/// (<see cref="IdToToken"/>, <see cref="VocabSize"/>), which the wrapper does not offer either,
/// are read from the JSON directly.
/// </remarks>
public sealed class HfTokenizer : ITokenizer
{
    private readonly Native.Tokenizer _main;
    private readonly Lazy<Native.Tokenizer> _plain;
    private readonly string?[] _idToToken;
    private readonly Dictionary<string, int> _tokenToId;
    private readonly Dictionary<string, int> _specialToId;
    // True when tokenizer_config.json's add_bos_token/add_eos_token disagree with the file's
    // post-processor; transformers then rebuilds the template from the flags, and so do we.
    private readonly bool _composeSpecials;
    private readonly bool _addBos;
    private readonly bool _addEos;

    public string SourcePath { get; }
    public int VocabSize => _idToToken.Length;
    public int? BosId { get; }
    public int? EosId { get; }
    public IReadOnlyList<int> StopIds { get; }
    public bool AddBosByDefault => _addBos;

    /// <summary>Loads <paramref name="path"/> (a tokenizer.json) with the side files in <paramref name="config"/>.</summary>
    public HfTokenizer(string path, TokenizerConfig config)
    {
        SourcePath = Path.GetFullPath(path);
        bool needsSanitizedMain;
        using (var doc = JsonFiles.ReadObject(SourcePath, "a Hugging Face tokenizer.json"))
        {
            var root = doc.RootElement;
            (_idToToken, _tokenToId, _specialToId) = ReadVocabulary(root, SourcePath);
            // transformers disables any truncation/padding stored in the file unless asked for
            // it per call, while the Rust library would apply them; drop them to match.
            needsSanitizedMain = IsSet(root, "truncation") || IsSet(root, "padding");
        }

        _main = needsSanitizedMain
            ? LoadModified(SourcePath, plain: false)
            : LoadNative(SourcePath, SourcePath);
        _plain = new Lazy<Native.Tokenizer>(() => LoadModified(SourcePath, plain: true), LazyThreadSafetyMode.ExecutionAndPublication);

        // Without side files, fall back to the well-known names among the special added tokens.
        BosId = config.BosToken is null
            ? SpecialTokens.Guess(SpecialTokens.BosGuesses, SpecialLookup)
            : SpecialTokens.Resolve(config.BosToken, "bos_token", SourcePath, TokenToId);
        EosId = config.EosToken is null
            ? SpecialTokens.Guess(SpecialTokens.EosGuesses, SpecialLookup)
            : SpecialTokens.Resolve(config.EosToken, "eos_token", SourcePath, TokenToId);
        StopIds = SpecialTokens.StopIds(EosId, config.GenerationEosIds, SpecialLookup, VocabSize);

        // What the post-processor adds around a text shows on the empty text.
        int[] bare = ToInts(_main.Encode(string.Empty));
        bool postAddsBos = BosId is int b && bare.Length > 0 && bare[0] == b;
        bool postAddsEos = EosId is int e && bare.Length > 0 && bare[^1] == e;
        if (config.AddBosToken is null && config.AddEosToken is null)
        {
            _addBos = postAddsBos;
            _addEos = postAddsEos;
        }
        else
        {
            _addBos = config.AddBosToken ?? postAddsBos;
            _addEos = config.AddEosToken ?? postAddsEos;
            if (_addBos && BosId is null)
                throw new RecurUserException($"tokenizer_config.json beside '{SourcePath}' sets add_bos_token but no BOS token is known; add \"bos_token\".");
            if (_addEos && EosId is null)
                throw new RecurUserException($"tokenizer_config.json beside '{SourcePath}' sets add_eos_token but no EOS token is known; add \"eos_token\".");
            _composeSpecials = !bare.SequenceEqual(Wrap([]));
        }
    }

    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!addSpecialTokens)
            return ToInts(_plain.Value.Encode(text));
        if (_composeSpecials)
            return Wrap(ToInts(_plain.Value.Encode(text)));
        return ToInts(_main.Encode(text));
    }

    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var known = new List<uint>(ids.Count);
        foreach (int id in ids)
        {
            if (id >= 0 && id < _idToToken.Length && _idToToken[id] is not null)
                known.Add((uint)id);
        }
        if (known.Count == 0)
            return string.Empty;
        var tokenizer = skipSpecialTokens ? _main : _plain.Value;
        return tokenizer.Decode([.. known]);
    }

    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    public int? TokenToId(string token) => _tokenToId.TryGetValue(token, out int id) ? id : null;

    public void Dispose()
    {
        _main.Dispose();
        if (_plain.IsValueCreated)
            _plain.Value.Dispose();
    }

    private int? SpecialLookup(string token) => _specialToId.TryGetValue(token, out int id) ? id : null;

    private int[] Wrap(int[] core)
    {
        var ids = new List<int>(core.Length + 2);
        if (_addBos && BosId is int b)
            ids.Add(b);
        ids.AddRange(core);
        if (_addEos && EosId is int e)
            ids.Add(e);
        return [.. ids];
    }

    private static int[] ToInts(uint[] ids) => Array.ConvertAll(ids, id => (int)id);

    private static bool IsSet(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;

    private static (string?[] IdToToken, Dictionary<string, int> TokenToId, Dictionary<string, int> Special) ReadVocabulary(JsonElement root, string path)
    {
        if (!root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new RecurUserException($"Cannot use '{path}': it has no \"model\" object; expected a Hugging Face tokenizer.json (tokenizer_config.json and friends are side files).");
        if (!model.TryGetProperty("vocab", out var vocab))
            throw new RecurUserException($"Cannot use '{path}': its \"model\" has no \"vocab\"; expected a Hugging Face tokenizer.json.");

        var tokenToId = new Dictionary<string, int>(StringComparer.Ordinal);
        var special = new Dictionary<string, int>(StringComparer.Ordinal);
        int maxId = -1;
        void Add(string token, int id)
        {
            if (id < 0)
                throw new RecurUserException($"Cannot use '{path}': token \"{token}\" has negative id {id}.");
            tokenToId[token] = id;
            maxId = Math.Max(maxId, id);
        }

        try
        {
            switch (vocab.ValueKind)
            {
                case JsonValueKind.Object: // BPE, WordPiece, WordLevel: {"token": id}
                    foreach (var p in vocab.EnumerateObject())
                        Add(p.Name, p.Value.GetInt32());
                    break;
                case JsonValueKind.Array: // Unigram: [["piece", score], ...], id = position
                    int i = 0;
                    foreach (var entry in vocab.EnumerateArray())
                        Add(entry[0].GetString() ?? throw new FormatException("null piece"), i++);
                    break;
                default:
                    throw new RecurUserException($"Cannot use '{path}': \"model.vocab\" is {vocab.ValueKind}; expected an object or a list.");
            }

            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (var t in added.EnumerateArray())
                {
                    string content = t.GetProperty("content").GetString() ?? throw new FormatException("null content");
                    int id = t.GetProperty("id").GetInt32();
                    Add(content, id);
                    if (t.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True)
                        special[content] = id;
                }
            }
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or KeyNotFoundException or IndexOutOfRangeException)
        {
            throw new RecurUserException($"Cannot use '{path}': its vocabulary is malformed ({e.Message}); expected a Hugging Face tokenizer.json.", e);
        }

        var idToToken = new string?[maxId + 1];
        foreach (var (token, id) in tokenToId)
            idToToken[id] = token;
        return (idToToken, tokenToId, special);
    }

    private static Native.Tokenizer LoadNative(string file, string reportedPath)
    {
        try
        {
            return new Native.Tokenizer(file);
        }
        catch (Native.TokenizerException e)
        {
            throw new RecurUserException($"Cannot load tokenizer '{reportedPath}': {e.Message}; expected a Hugging Face tokenizer.json.", e);
        }
    }

    // Writes a modified copy of the tokenizer.json to a temporary file, loads it, and deletes it
    // (the native library reads the file once, at load).
    private static Native.Tokenizer LoadModified(string path, bool plain)
    {
        JsonNode root;
        using (var stream = File.OpenRead(path))
            root = JsonNode.Parse(stream, documentOptions: new JsonDocumentOptions { MaxDepth = 256 })!;
        root["truncation"] = null;
        root["padding"] = null;
        if (plain)
        {
            root["post_processor"] = null;
            if (root["added_tokens"] is JsonArray added)
            {
                foreach (var t in added)
                {
                    if (t is JsonObject o)
                        o["special"] = false;
                }
            }
        }

        string temp = Path.Combine(Path.GetTempPath(), $"recur-tokenizer-{Guid.NewGuid():N}.json");
        try
        {
            using (var output = File.Create(temp))
            using (var writer = new Utf8JsonWriter(output))
                root.WriteTo(writer);
            return LoadNative(temp, path);
        }
        finally
        {
            try { File.Delete(temp); } catch (IOException) { } // best effort: it is a temp file
        }
    }
}
