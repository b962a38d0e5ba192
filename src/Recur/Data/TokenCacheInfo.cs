using System.Security.Cryptography;
using System.Text.Json.Serialization;
using Recur.Tokenization;

namespace Recur.Data;

/// <summary>Which tokenizer produced a token cache: its file, content hashes and the ids that shape documents.</summary>
public sealed record TokenizerIdentity
{
    /// <summary>Where the tokenizer was loaded from. Informational: a moved but identical tokenizer still matches.</summary>
    [JsonPropertyName("path")] public string Path { get; init; } = "";
    [JsonPropertyName("sha256")] public string Sha256 { get; init; } = "";
    /// <summary>SHA-256 of the side files that change BOS/EOS (tokenizer_config.json, special_tokens_map.json) when present.</summary>
    [JsonPropertyName("side_files")] public SortedDictionary<string, string> SideFiles { get; init; } = new(StringComparer.Ordinal);
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }
    [JsonPropertyName("bos_id")] public int? BosId { get; init; }
    [JsonPropertyName("eos_id")] public int? EosId { get; init; }
    [JsonPropertyName("add_bos")] public bool AddBos { get; init; }

    private static readonly string[] SideFileNames = ["tokenizer_config.json", "special_tokens_map.json"];

    /// <summary>Hashes the files behind <paramref name="tokenizer"/>.</summary>
    public static TokenizerIdentity Of(ITokenizer tokenizer)
    {
        if (tokenizer is Recur.Tokenization.CharTokenizerAdapter ch && !File.Exists(tokenizer.SourcePath))
        {
            // The built-in character tokenizer (recipe "tokenizer": "char") has no file: it is identified by the
            // hash of the file it would save.
            string tmp = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"recur-char-{Guid.NewGuid():N}.json");
            try
            {
                ch.Inner.Save(tmp);
                return new TokenizerIdentity
                {
                    Path = tokenizer.SourcePath, Sha256 = Sha256Of(tmp), SideFiles = new SortedDictionary<string, string>(StringComparer.Ordinal),
                    VocabSize = tokenizer.VocabSize, BosId = tokenizer.BosId, EosId = tokenizer.EosId, AddBos = tokenizer.AddBosByDefault,
                };
            }
            finally { File.Delete(tmp); }
        }
        string path = System.IO.Path.GetFullPath(tokenizer.SourcePath);
        var side = new SortedDictionary<string, string>(StringComparer.Ordinal);
        string dir = System.IO.Path.GetDirectoryName(path)!;
        foreach (string name in SideFileNames)
        {
            string p = System.IO.Path.Combine(dir, name);
            if (File.Exists(p)) side[name] = Sha256Of(p);
        }
        return new TokenizerIdentity
        {
            Path = path,
            Sha256 = Sha256Of(path),
            SideFiles = side,
            VocabSize = tokenizer.VocabSize,
            BosId = tokenizer.BosId,
            EosId = tokenizer.EosId,
            AddBos = tokenizer.AddBosByDefault,
        };
    }

    internal static string Sha256Of(string file)
    {
        using var s = File.OpenRead(file);
        return Convert.ToHexStringLower(SHA256.HashData(s));
    }
}

/// <summary>One data file as the cache saw it: a changed size or modification time means a rebuild.</summary>
public sealed record SourceFileStamp(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("container")] string Container,
    [property: JsonPropertyName("size")] long Size,
    [property: JsonPropertyName("last_write_utc")] DateTime LastWriteUtc);

/// <summary>The source settings that decide the documents of a cache.</summary>
public sealed record SourceIdentity
{
    [JsonPropertyName("path")] public string Path { get; init; } = "";
    [JsonPropertyName("format")] public SourceFormat Format { get; init; }
    [JsonPropertyName("template")] public string Template { get; init; } = "";
    [JsonPropertyName("text_unit")] public TextUnit TextUnit { get; init; }
    [JsonPropertyName("skip_bad_lines")] public bool SkipBadLines { get; init; }
    [JsonPropertyName("files")] public IReadOnlyList<SourceFileStamp> Files { get; init; } = [];
}

/// <summary>
/// The JSON sidecar of a token file (<c>NAME.json</c> beside <c>NAME.tokens</c>): what was
/// tokenised with what, and what came out. The cache is reused only when the format version,
/// the tokenizer's content and the source (settings and file stamps) all match.
/// </summary>
public sealed record TokenCacheInfo
{
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = TokenCache.FormatVersion;
    /// <summary>"uint16" when every id fits (vocabulary ≤ 65,536), else "uint32"; little-endian.</summary>
    [JsonPropertyName("dtype")] public string DType { get; init; } = "uint16";
    [JsonPropertyName("documents")] public long Documents { get; init; }
    [JsonPropertyName("tokens")] public long Tokens { get; init; }
    /// <summary>Documents dropped because they were empty after stripping.</summary>
    [JsonPropertyName("empty_documents")] public long EmptyDocuments { get; init; }
    /// <summary>Malformed JSONL lines / Parquet rows with nulls skipped under <c>skip_bad_lines</c>.</summary>
    [JsonPropertyName("bad_records")] public long BadRecords { get; init; }
    [JsonPropertyName("tokenizer")] public TokenizerIdentity Tokenizer { get; init; } = new();
    [JsonPropertyName("source")] public SourceIdentity Source { get; init; } = new();

    [JsonIgnore] public int BytesPerToken => DType == "uint16" ? 2 : 4;
}
