using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Recur.Checkpoints;
using Recur.Tokenization;

namespace Recur.Data;

/// <summary>
/// Tokenises a source once into a flat token file (METHOD §5 document layout) and reuses it
/// while nothing it depends on has changed.
/// </summary>
public static class TokenCache
{
    /// <summary>Bumped whenever the bytes a given input produces would change.</summary>
    public const int FormatVersion = 1;

    internal static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>The token file and sidecar paths of <paramref name="source"/> under <paramref name="cacheDir"/>.</summary>
    /// <remarks>
    /// The name carries a hash of the source settings and the tokenizer's content, so caches for
    /// different tokenizers or templates of one corpus live side by side; a changed data file
    /// keeps its name and is rebuilt in place.
    /// </remarks>
    public static (string Tokens, string Sidecar) PathsFor(DataSourceSpec source, TokenizerIdentity tokenizer, string cacheDir)
    {
        string key = string.Join('\n',
            System.IO.Path.GetFullPath(source.Path), source.Format, source.EffectiveTemplate, source.TextUnit, source.SkipBadLines,
            tokenizer.Sha256, string.Join(',', tokenizer.SideFiles.Select(kv => kv.Key + "=" + kv.Value)));
        string hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..12];
        string stem = Stem(source.Path);
        string dir = System.IO.Path.GetFullPath(cacheDir);
        return (System.IO.Path.Combine(dir, $"{stem}-{hash}.tokens"), System.IO.Path.Combine(dir, $"{stem}-{hash}.json"));
    }

    /// <summary>The identity a fresh cache of <paramref name="source"/> would record (lists the files, checks they exist).</summary>
    internal static (SourceIdentity Identity, IReadOnlyList<SourceFile> Files) Identify(DataSourceSpec source)
    {
        var files = DocumentReader.ListFiles(source);
        var id = new SourceIdentity
        {
            Path = System.IO.Path.GetFullPath(source.Path),
            Format = source.Format,
            Template = source.EffectiveTemplate,
            TextUnit = source.TextUnit,
            SkipBadLines = source.SkipBadLines,
            Files = [.. files.Select(f => new SourceFileStamp(f.Path, ContainerName(f), f.Size, f.LastWriteUtc))],
        };
        return (id, files);
    }

    /// <summary>The sidecar at <paramref name="sidecar"/> when it describes exactly this tokenizer and source and its token file is whole; else null.</summary>
    internal static TokenCacheInfo? TryReuse(string tokensPath, string sidecar, TokenizerIdentity tokenizer, SourceIdentity source)
    {
        if (!File.Exists(sidecar) || !File.Exists(tokensPath))
            return null;
        TokenCacheInfo? info;
        try
        {
            info = JsonSerializer.Deserialize<TokenCacheInfo>(File.ReadAllText(sidecar), Json);
        }
        catch (JsonException)
        {
            return null;
        }
        if (info is null || info.FormatVersion != FormatVersion || info.DType is not ("uint16" or "uint32"))
            return null;
        if (MatchKey(info.Tokenizer, info.Source) != MatchKey(tokenizer, source))
            return null;
        if (new FileInfo(tokensPath).Length != info.Tokens * info.BytesPerToken)
            return null;
        return info;
    }

    private static string MatchKey(TokenizerIdentity t, SourceIdentity s) =>
        JsonSerializer.Serialize(t with { Path = "" }, Json) + JsonSerializer.Serialize(s, Json);

    /// <summary>
    /// Tokenises every document of <paramref name="source"/> as <c>[BOS] + ids(text.strip()) + EOS</c>
    /// and writes the token file, then the sidecar, each atomically. <paramref name="onBytes"/>
    /// receives the source bytes read so far.
    /// </summary>
    internal static TokenCacheInfo Build(DataSourceSpec source, IReadOnlyList<SourceFile> files, SourceIdentity sourceId,
        ITokenizer tokenizer, TokenizerIdentity tokenizerId, string tokensPath, string sidecar, Action<long>? onBytes, CancellationToken ct)
    {
        int eos = tokenizer.EosId
            ?? throw new RecurUserException($"Tokenizer '{tokenizer.SourcePath}' has no EOS token; packing needs one to end every document (METHOD §5). Set \"eos_token\" in tokenizer_config.json.");
        int bytesPerToken = tokenizer.VocabSize <= 1 << 16 ? 2 : 4;
        var template = DocumentTemplate.Parse(source.EffectiveTemplate);
        var counters = new ReadCounters();
        long documents = 0, tokens = 0;

        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(tokensPath)!);
        // A sidecar left from an older build must not vouch for a half-replaced token file.
        File.Delete(sidecar);
        AtomicFile.Write(tokensPath, fs =>
        {
            var buffer = new byte[1 << 16];
            long before = 0;
            foreach (var file in files)
            {
                long offset = before;
                foreach (string doc in DocumentReader.Read(file, source, template, counters, done => onBytes?.Invoke(offset + done), ct))
                {
                    // METHOD §5: text.strip() + eos_token, tokenised with special tokens, so the
                    // tokenizer's own policy decides BOS (Llama 2 adds it, the Llama 3 tokenizer does not).
                    int[] ids = tokenizer.Encode(doc, addSpecialTokens: true);
                    WriteIds(fs, ids, bytesPerToken, buffer, tokenizer.SourcePath);
                    WriteIds(fs, [eos], bytesPerToken, buffer, tokenizer.SourcePath);
                    tokens += ids.Length + 1;
                    documents++;
                }
                before += file.Size;
                onBytes?.Invoke(before);
            }
        });

        if (documents == 0)
        {
            File.Delete(tokensPath);
            string why = counters.BadRecords > 0 ? $"all {counters.BadRecords} records were malformed and skipped"
                : counters.EmptyDocuments > 0 ? $"all {counters.EmptyDocuments} documents are empty or whitespace"
                : "nothing was read";
            throw new RecurUserException($"Data source '{source.Path}' has no documents: {why}.");
        }

        var info = new TokenCacheInfo
        {
            DType = bytesPerToken == 2 ? "uint16" : "uint32",
            Documents = documents,
            Tokens = tokens,
            EmptyDocuments = counters.EmptyDocuments,
            BadRecords = counters.BadRecords,
            Tokenizer = tokenizerId,
            Source = sourceId,
        };
        AtomicFile.WriteAllText(sidecar, JsonSerializer.Serialize(info, Json));
        return info;
    }

    private static void WriteIds(FileStream fs, int[] ids, int bytesPerToken, byte[] buffer, string tokenizerPath)
    {
        int perChunk = buffer.Length / bytesPerToken;
        for (int start = 0; start < ids.Length; start += perChunk)
        {
            int n = Math.Min(perChunk, ids.Length - start);
            for (int i = 0; i < n; i++)
            {
                int id = ids[start + i];
                if (id < 0 || (bytesPerToken == 2 && id > ushort.MaxValue))
                    throw new RecurUserException($"Tokenizer '{tokenizerPath}' produced id {id}, outside its vocabulary of {(bytesPerToken == 2 ? "≤ 65536" : "int32")} ids.");
                if (bytesPerToken == 2) BinaryPrimitives.WriteUInt16LittleEndian(buffer.AsSpan(i * 2), (ushort)id);
                else BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(i * 4), (uint)id);
            }
            fs.Write(buffer, 0, n * bytesPerToken);
        }
    }

    private static string ContainerName(SourceFile f) => f.Container switch
    {
        SourceFormat.Text => "text",
        SourceFormat.Jsonl => "jsonl",
        _ => "parquet",
    } + (f.Gzip ? "+gzip" : "");

    private static string Stem(string path)
    {
        string name = System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(path)));
        int dot = name.IndexOf('.', 1);
        if (dot > 0) name = name[..dot];
        var sb = new StringBuilder();
        foreach (char c in name)
            sb.Append(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' ? c : '_');
        string stem = sb.Length == 0 ? "source" : sb.ToString();
        return stem.Length > 40 ? stem[..40] : stem;
    }
}
