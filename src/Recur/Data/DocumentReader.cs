using System.IO.Compression;
using System.Text;
using System.Text.Json;
using Parquet;
using Parquet.Schema;

namespace Recur.Data;

/// <summary>One data file of a source, with the container it is read as and the stamp the token cache checks.</summary>
internal sealed record SourceFile(string Path, SourceFormat Container, bool Gzip, long Size, DateTime LastWriteUtc);

/// <summary>What reading a source skipped: counted in the cache sidecar and reported by <c>recur data prepare</c>.</summary>
internal sealed class ReadCounters
{
    public long BadRecords;
    public long EmptyDocuments;
}

/// <summary>
/// Turns the files of a <see cref="DataSourceSpec"/> into document texts, already stripped like
/// Python's <c>str.strip()</c> (METHOD §5: each document is <c>text.strip() + eos_token</c>).
/// Documents that are empty after stripping are skipped and counted: they would only add a
/// BOS/EOS pair.
/// </summary>
internal static class DocumentReader
{
    private static readonly string[] JsonlExtensions = [".jsonl", ".json", ".ndjson"];
    private static readonly string[] TextExtensions = [".txt", ".text"];

    /// <summary>The files of <paramref name="source"/>: the file itself, or a folder's matching files in ordinal path order.</summary>
    public static IReadOnlyList<SourceFile> ListFiles(DataSourceSpec source)
    {
        string path = System.IO.Path.GetFullPath(source.Path);
        List<string> files;
        if (File.Exists(path))
        {
            files = [path];
        }
        else if (Directory.Exists(path))
        {
            files = [.. Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
                .Where(f => !IsHidden(path, f) && InFolderSelection(f, source.Format))
                .Order(StringComparer.Ordinal)];
            if (files.Count == 0)
                throw new RecurUserException($"Data folder '{path}' has no {FolderSelectionName(source.Format)} files.");
        }
        else
        {
            throw new RecurUserException($"Data source not found: '{path}' does not exist; expected a file or a folder of data files.");
        }

        var result = new List<SourceFile>(files.Count);
        foreach (string f in files)
        {
            var info = new FileInfo(f);
            if (info.Length == 0)
                throw new RecurUserException($"Data file '{f}' is empty.");
            var (container, gzip) = ContainerOf(f, source.Format);
            result.Add(new SourceFile(f, container, gzip, info.Length, info.LastWriteTimeUtc));
        }
        return result;
    }

    /// <summary>Document texts of one file, stripped and non-empty. <paramref name="onBytes"/> gets the bytes of the file read so far.</summary>
    public static IEnumerable<string> Read(SourceFile file, DataSourceSpec source, DocumentTemplate template, ReadCounters counters, Action<long>? onBytes, CancellationToken ct)
    {
        var raw = file.Container switch
        {
            SourceFormat.Text => ReadText(file, source.TextUnit, onBytes),
            SourceFormat.Jsonl => ReadJsonl(file, template, source.SkipBadLines, counters, onBytes),
            SourceFormat.Parquet => ReadParquet(file, template, source.SkipBadLines, counters, onBytes, ct),
            _ => throw new InvalidOperationException($"container {file.Container}"),
        };
        foreach (string text in raw)
        {
            ct.ThrowIfCancellationRequested();
            string doc = PyStrip(text);
            if (doc.Length == 0)
            {
                counters.EmptyDocuments++;
                continue;
            }
            yield return doc;
        }
    }

    /// <summary>
    /// Python's <c>str.strip()</c>: .NET's <see cref="string.Trim()"/> minus the four separators
    /// U+001C–U+001F, which Python also counts as whitespace.
    /// </summary>
    public static string PyStrip(string s)
    {
        int start = 0, end = s.Length;
        while (start < end && IsPySpace(s[start])) start++;
        while (end > start && IsPySpace(s[end - 1])) end--;
        return start == 0 && end == s.Length ? s : s[start..end];
    }

    private static bool IsPySpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';

    private static bool IsHidden(string root, string file) =>
        System.IO.Path.GetRelativePath(root, file).Split(System.IO.Path.DirectorySeparatorChar).Any(p => p.StartsWith('.'));

    private static string StripGz(string name) =>
        name.EndsWith(".gz", StringComparison.OrdinalIgnoreCase) ? name[..^3] : name;

    private static bool HasExtension(string file, string[] extensions) =>
        extensions.Contains(System.IO.Path.GetExtension(StripGz(file)).ToLowerInvariant());

    private static bool IsParquet(string file) =>
        file.EndsWith(".parquet", StringComparison.OrdinalIgnoreCase);

    // In a folder, "auto" must not pick up README.md, LICENSE or .gitattributes beside the shards.
    private static bool InFolderSelection(string file, SourceFormat format) => format switch
    {
        SourceFormat.Auto => IsParquet(file) || HasExtension(file, JsonlExtensions) || HasExtension(file, TextExtensions),
        SourceFormat.Text => true,
        SourceFormat.Jsonl => HasExtension(file, JsonlExtensions),
        SourceFormat.Parquet => IsParquet(file),
        SourceFormat.Gsm8k => IsParquet(file) || HasExtension(file, JsonlExtensions),
        _ => false,
    };

    private static string FolderSelectionName(SourceFormat format) => format switch
    {
        SourceFormat.Auto => ".parquet, .jsonl, .json, .ndjson or .txt",
        SourceFormat.Text => "non-hidden",
        SourceFormat.Parquet => ".parquet",
        _ => ".jsonl, .json or .ndjson" + (format == SourceFormat.Gsm8k ? " or .parquet" : ""),
    };

    private static (SourceFormat, bool) ContainerOf(string file, SourceFormat declared)
    {
        bool gz = file.EndsWith(".gz", StringComparison.OrdinalIgnoreCase);
        SourceFormat container = declared switch
        {
            SourceFormat.Text => SourceFormat.Text,
            SourceFormat.Jsonl => SourceFormat.Jsonl,
            SourceFormat.Parquet => SourceFormat.Parquet,
            SourceFormat.Gsm8k => IsParquet(file) ? SourceFormat.Parquet : SourceFormat.Jsonl,
            _ => IsParquet(file) ? SourceFormat.Parquet : HasExtension(file, JsonlExtensions) ? SourceFormat.Jsonl : SourceFormat.Text,
        };
        if (container == SourceFormat.Parquet && gz)
            throw new RecurUserException($"'{file}': gzip-compressed Parquet is not supported (Parquet compresses its pages itself); decompress it first.");
        return (container, gz);
    }

    private static StreamReader OpenText(SourceFile file, out FileStream raw)
    {
        raw = new FileStream(file.Path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Stream s = file.Gzip ? new GZipStream(raw, CompressionMode.Decompress) : raw;
        // Invalid UTF-8 becomes U+FFFD, as Python's errors="replace" would; a BOM is dropped.
        return new StreamReader(s, new UTF8Encoding(false, false), detectEncodingFromByteOrderMarks: true, bufferSize: 1 << 16);
    }

    private static IEnumerable<string> ReadText(SourceFile file, TextUnit unit, Action<long>? onBytes)
    {
        using var reader = OpenText(file, out var raw);
        if (unit == TextUnit.File)
        {
            // Universal newlines, as Python's text mode and HF's "text" loader read files.
            string all = reader.ReadToEnd().Replace("\r\n", "\n").Replace('\r', '\n');
            onBytes?.Invoke(raw.Position);
            yield return all;
            yield break;
        }

        var paragraph = new StringBuilder();
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.AsSpan().IsWhiteSpace())
            {
                if (paragraph.Length > 0)
                {
                    yield return paragraph.ToString();
                    paragraph.Clear();
                    onBytes?.Invoke(raw.Position);
                }
                continue;
            }
            if (paragraph.Length > 0) paragraph.Append('\n');
            paragraph.Append(line);
        }
        if (paragraph.Length > 0)
            yield return paragraph.ToString();
        onBytes?.Invoke(raw.Position);
    }

    private static IEnumerable<string> ReadJsonl(SourceFile file, DocumentTemplate template, bool skipBad, ReadCounters counters, Action<long>? onBytes)
    {
        using var reader = OpenText(file, out var raw);
        var values = new string[template.FieldNames.Count];
        long lineNo = 0;
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            lineNo++;
            if (line.AsSpan().IsWhiteSpace())
                continue;
            string? problem = TryReadRecord(line, template.FieldNames, values);
            if (problem is not null)
            {
                if (lineNo == 1 && line.TrimStart().StartsWith('['))
                    problem += " (this looks like a JSON array; expected JSON Lines: one object per line)";
                if (!skipBad)
                    throw new RecurUserException($"{file.Path}:{lineNo}: {problem}; fix the line or set skip_bad_lines (--skip-bad-lines) to skip such lines.");
                counters.BadRecords++;
                continue;
            }
            yield return template.Fill(values);
            if ((lineNo & 1023) == 0) onBytes?.Invoke(raw.Position);
        }
        onBytes?.Invoke(raw.Position);
    }

    /// <summary>Fills <paramref name="values"/> from one JSON line; returns what is wrong with it, or null.</summary>
    private static string? TryReadRecord(string line, IReadOnlyList<string> fields, string[] values)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(line);
        }
        catch (JsonException e)
        {
            return $"not valid JSON ({e.Message})";
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                return $"expected a JSON object, got {Kind(root.ValueKind)}";
            for (int i = 0; i < fields.Count; i++)
            {
                if (!root.TryGetProperty(fields[i], out var v))
                    return $"no \"{fields[i]}\" field (the object has {Keys(root)})";
                switch (v.ValueKind)
                {
                    case JsonValueKind.String: values[i] = v.GetString()!; break;
                    // Numbers and booleans have one obvious text (GSM8K-style numeric answers).
                    case JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False: values[i] = v.GetRawText(); break;
                    default: return $"\"{fields[i]}\" is {Kind(v.ValueKind)}; expected a string";
                }
            }
            return null;
        }
    }

    private static string Kind(JsonValueKind k) => k switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.Null => "null",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        _ => k.ToString().ToLowerInvariant(),
    };

    private static string Keys(JsonElement obj)
    {
        var keys = obj.EnumerateObject().Select(p => p.Name).Take(10).ToList();
        return keys.Count == 0 ? "no keys" : "keys " + string.Join(", ", keys.Select(k => $"\"{k}\""));
    }

    private static IEnumerable<string> ReadParquet(SourceFile file, DocumentTemplate template, bool skipBad, ReadCounters counters, Action<long>? onBytes, CancellationToken ct)
    {
        // Parquet.Net is async-only; the pipeline is a single synchronous pass, so block on each call.
        var reader = Wrap(file, () => ParquetReader.CreateAsync(file.Path, null, ct).GetAwaiter().GetResult());
        try
        {
            var columns = template.FieldNames.Select(name => FindColumn(file, reader.Schema, name)).ToArray();
            var values = new string[columns.Length];
            for (int g = 0; g < reader.RowGroupCount; g++)
            {
                var group = reader.OpenRowGroupReader(g);
                int rows = checked((int)group.RowCount);
                var data = new string?[columns.Length][];
                for (int c = 0; c < columns.Length; c++)
                {
                    data[c] = new string?[rows];
                    int col = c;
                    Wrap(file, () => { group.ReadAsync(columns[col], data[col].AsMemory(), null, ct).AsTask().GetAwaiter().GetResult(); return 0; });
                }
                for (int r = 0; r < rows; r++)
                {
                    string? nullColumn = null;
                    for (int c = 0; c < columns.Length && nullColumn is null; c++)
                    {
                        if (data[c][r] is { } v) values[c] = v;
                        else nullColumn = columns[c].Name;
                    }
                    if (nullColumn is not null)
                    {
                        if (!skipBad)
                            throw new RecurUserException($"{file.Path}: row group {g}, row {r}: column \"{nullColumn}\" is null; set skip_bad_lines (--skip-bad-lines) to skip such rows.");
                        counters.BadRecords++;
                        continue;
                    }
                    yield return template.Fill(values);
                }
                onBytes?.Invoke(file.Size * (g + 1) / reader.RowGroupCount);
            }
        }
        finally
        {
            reader.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    private static DataField FindColumn(SourceFile file, ParquetSchema schema, string name)
    {
        var fields = schema.GetDataFields();
        var field = fields.FirstOrDefault(f => f.Path.ToString() == name)
            ?? throw new RecurUserException($"{file.Path}: no column \"{name}\" (the file has {string.Join(", ", fields.Take(10).Select(f => $"\"{f.Path}\""))}); set \"fields\" (--field) to the text column.");
        if (field.IsArray || (field.ClrType != typeof(string) && field.ClrType != typeof(ReadOnlyMemory<char>)))
            throw new RecurUserException($"{file.Path}: column \"{name}\" holds {(field.IsArray ? "lists" : field.ClrType.Name)}; expected a string column.");
        return field;
    }

    private static T Wrap<T>(SourceFile file, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is not (RecurUserException or OperationCanceledException or OutOfMemoryException))
        {
            throw new RecurUserException($"Cannot read '{file.Path}' as Parquet: {e.Message}", e);
        }
    }
}
