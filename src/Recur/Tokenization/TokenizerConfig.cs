using System.Text.Json;

namespace Recur.Tokenization;

/// <summary>An added token declared in tokenizer_config.json's <c>added_tokens_decoder</c>.</summary>
public sealed record ConfigAddedToken(int Id, string Content, bool Special);

/// <summary>
/// The Hugging Face side files that sit next to a tokenizer and change how it is used:
/// tokenizer_config.json, special_tokens_map.json (its token names win over tokenizer_config's,
/// as in transformers) and generation_config.json (only its <c>eos_token_id</c>, for stop ids).
/// Every property is null/empty when the files do not say.
/// </summary>
public sealed record TokenizerConfig
{
    public bool? AddBosToken { get; init; }
    public bool? AddEosToken { get; init; }
    public string? BosToken { get; init; }
    public string? EosToken { get; init; }
    public string? UnkToken { get; init; }
    public IReadOnlyList<ConfigAddedToken> AddedTokens { get; init; } = [];
    public IReadOnlyList<string> AdditionalSpecialTokens { get; init; } = [];
    public IReadOnlyList<int> GenerationEosIds { get; init; } = [];

    /// <summary>No side files: every tokenizer falls back to its own defaults.</summary>
    public static TokenizerConfig Empty { get; } = new();

    /// <summary>Reads the side files in the folder of <paramref name="tokenizerFile"/>; absent files are fine, broken ones throw <see cref="RecurUserException"/>.</summary>
    public static TokenizerConfig ReadBeside(string tokenizerFile)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(tokenizerFile)) ?? ".";
        var config = Empty;

        string configPath = Path.Combine(dir, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            using var doc = JsonFiles.ReadObject(configPath, "a Hugging Face tokenizer_config.json object");
            var root = doc.RootElement;
            config = config with
            {
                AddBosToken = ReadBool(root, "add_bos_token", configPath),
                AddEosToken = ReadBool(root, "add_eos_token", configPath),
                BosToken = ReadTokenName(root, "bos_token", configPath),
                EosToken = ReadTokenName(root, "eos_token", configPath),
                UnkToken = ReadTokenName(root, "unk_token", configPath),
                AddedTokens = ReadAddedTokens(root, configPath),
                AdditionalSpecialTokens = ReadTokenList(root, "additional_special_tokens", configPath),
            };
        }

        string mapPath = Path.Combine(dir, "special_tokens_map.json");
        if (File.Exists(mapPath))
        {
            using var doc = JsonFiles.ReadObject(mapPath, "a Hugging Face special_tokens_map.json object");
            var root = doc.RootElement;
            var extra = ReadTokenList(root, "additional_special_tokens", mapPath);
            config = config with
            {
                BosToken = ReadTokenName(root, "bos_token", mapPath) ?? config.BosToken,
                EosToken = ReadTokenName(root, "eos_token", mapPath) ?? config.EosToken,
                UnkToken = ReadTokenName(root, "unk_token", mapPath) ?? config.UnkToken,
                AdditionalSpecialTokens = extra.Count > 0 ? extra : config.AdditionalSpecialTokens,
            };
        }

        string genPath = Path.Combine(dir, "generation_config.json");
        if (File.Exists(genPath))
        {
            using var doc = JsonFiles.ReadObject(genPath, "a Hugging Face generation_config.json object");
            config = config with { GenerationEosIds = ReadIntOrList(doc.RootElement, "eos_token_id", genPath) };
        }

        return config;
    }

    private static bool? ReadBool(JsonElement root, string name, string file)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
            return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw JsonFiles.Bad(file, $"\"{name}\" is {v.ValueKind}, expected true or false"),
        };
    }

    // Token names come either as a plain string or as a serialized AddedToken {"content": ...}.
    private static string? TokenName(JsonElement v, string name, string file) => v.ValueKind switch
    {
        JsonValueKind.Null => null,
        JsonValueKind.String => v.GetString(),
        JsonValueKind.Object when v.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
        _ => throw JsonFiles.Bad(file, $"\"{name}\" is {v.ValueKind}, expected a string or an object with a \"content\" string"),
    };

    private static string? ReadTokenName(JsonElement root, string name, string file) =>
        root.TryGetProperty(name, out var v) ? TokenName(v, name, file) : null;

    private static IReadOnlyList<string> ReadTokenList(JsonElement root, string name, string file)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
            return [];
        if (v.ValueKind != JsonValueKind.Array)
            throw JsonFiles.Bad(file, $"\"{name}\" is {v.ValueKind}, expected a list of tokens");
        var list = new List<string>();
        foreach (var item in v.EnumerateArray())
        {
            if (TokenName(item, name, file) is { } s)
                list.Add(s);
        }
        return list;
    }

    private static IReadOnlyList<ConfigAddedToken> ReadAddedTokens(JsonElement root, string file)
    {
        if (!root.TryGetProperty("added_tokens_decoder", out var v) || v.ValueKind == JsonValueKind.Null)
            return [];
        if (v.ValueKind != JsonValueKind.Object)
            throw JsonFiles.Bad(file, $"\"added_tokens_decoder\" is {v.ValueKind}, expected an object keyed by token id");
        var list = new List<ConfigAddedToken>();
        foreach (var p in v.EnumerateObject())
        {
            if (!int.TryParse(p.Name, out int id) || id < 0)
                throw JsonFiles.Bad(file, $"\"added_tokens_decoder\" has key \"{p.Name}\", expected a token id");
            string content = TokenName(p.Value, "added_tokens_decoder", file)
                ?? throw JsonFiles.Bad(file, $"\"added_tokens_decoder\".\"{p.Name}\" has no \"content\"");
            bool special = p.Value.ValueKind == JsonValueKind.Object
                && p.Value.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True;
            list.Add(new ConfigAddedToken(id, content, special));
        }
        return list;
    }

    private static IReadOnlyList<int> ReadIntOrList(JsonElement root, string name, string file)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
            return [];
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int one))
            return [one];
        if (v.ValueKind == JsonValueKind.Array)
        {
            var list = new List<int>();
            foreach (var item in v.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id))
                    throw JsonFiles.Bad(file, $"\"{name}\" holds {item.ValueKind}, expected token ids");
                list.Add(id);
            }
            return list;
        }
        throw JsonFiles.Bad(file, $"\"{name}\" is {v.ValueKind}, expected a token id or a list of them");
    }
}
