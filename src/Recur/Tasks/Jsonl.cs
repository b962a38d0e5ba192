using System.Text.Json;
using System.Text.Json.Nodes;

namespace Recur.Tasks;

/// <summary>How to read a task's data file.</summary>
/// <param name="Limit">Use only the first <c>Limit</c> examples (lm-eval's <c>--limit</c>); null = all.</param>
/// <param name="SkipBadLines">Skip (and count) lines that are not JSON objects or lack a required field, instead of failing.</param>
public sealed record TaskLoadOptions(int? Limit = null, bool SkipBadLines = false)
{
    public static TaskLoadOptions Default { get; } = new();
}

/// <summary>The examples read from one file, with what was skipped and anything the user should be told.</summary>
public sealed record TaskData<T>(string Path, IReadOnlyList<T> Docs, int SkippedLines, IReadOnlyList<string> Warnings);

/// <summary>One parsed JSONL line. Field accessors fail with the file, the line and the field name.</summary>
public sealed class JsonlRow
{
    internal JsonlRow(string path, int line, JsonObject obj) { Path = path; Line = line; Object = obj; }

    public string Path { get; }
    /// <summary>1-based line number in the file.</summary>
    public int Line { get; }
    public JsonObject Object { get; }

    public bool Has(string field) => Object[field] is not null;

    /// <summary>Throws the error for a bad line; the reader turns it into a user error or a skipped line.</summary>
    public Exception Error(string what) => new JsonlLineException($"{Path}:{Line}: {what}");

    public JsonNode Node(string field) => Object[field] ?? throw Error($"missing field '{field}'");

    public string String(string field) => AsString(Node(field), field);

    public string? OptionalString(string field) => Object[field] is JsonNode n ? AsString(n, field) : null;

    /// <summary>A string field that may also be written as a JSON number (e.g. a numeric answer).</summary>
    public string StringOrNumber(string field)
    {
        var n = Node(field);
        return n is JsonValue v && v.GetValueKind() == JsonValueKind.Number ? v.ToJsonString() : AsString(n, field);
    }

    /// <summary>An integer field, also accepted as a string of digits (HF datasets store several labels as strings).</summary>
    public int Int(string field)
    {
        var n = Node(field);
        if (n is JsonValue v)
        {
            if (v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out int i)) return i;
            if (v.GetValueKind() == JsonValueKind.String && int.TryParse(v.GetValue<string>().Trim(), System.Globalization.NumberStyles.AllowLeadingSign,
                    System.Globalization.CultureInfo.InvariantCulture, out i)) return i;
        }
        throw Error($"field '{field}' must be an integer (got {Show(n)})");
    }

    public IReadOnlyList<string> StringList(string field, JsonNode? node = null)
    {
        var n = node ?? Node(field);
        if (n is not JsonArray a) throw Error($"field '{field}' must be a list of strings (got {Show(n)})");
        var list = new List<string>(a.Count);
        foreach (var e in a) list.Add(e is JsonValue ev && ev.GetValueKind() == JsonValueKind.String ? ev.GetValue<string>()
            : throw Error($"field '{field}' must be a list of strings (an element is {Show(e)})"));
        return list;
    }

    string AsString(JsonNode n, string field) =>
        n is JsonValue v && v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : throw Error($"field '{field}' must be a string (got {Show(n)})");

    static string Show(JsonNode? n) => n switch
    {
        null => "null",
        JsonArray => "a list",
        JsonObject => "an object",
        JsonValue v => v.GetValueKind().ToString().ToLowerInvariant(),
        _ => "?",
    };
}

/// <summary>A bad line: fatal, or counted and skipped under <see cref="TaskLoadOptions.SkipBadLines"/>.</summary>
public sealed class JsonlLineException(string message) : Exception(message);

/// <summary>Reads JSON-lines task files with errors that name the file and line.</summary>
public static class Jsonl
{
    /// <summary>
    /// Reads <paramref name="path"/> line by line, converting each JSON object with <paramref name="convert"/>
    /// until <see cref="TaskLoadOptions.Limit"/> examples are collected. Blank lines are ignored.
    /// </summary>
    public static TaskData<T> Read<T>(string path, Func<JsonlRow, T> convert, TaskLoadOptions? options = null)
    {
        options ??= TaskLoadOptions.Default;
        if (options.Limit is int lim && lim < 1) throw new RecurUserException($"limit must be at least 1 (got {lim})");
        if (Directory.Exists(path)) throw new RecurUserException($"{path}: is a directory; expected a .jsonl file");
        if (!File.Exists(path)) throw new RecurUserException($"{path}: file not found");

        var docs = new List<T>();
        var warnings = new List<string>();
        int skipped = 0, lineNo = 0, nonBlank = 0;
        string? firstSkip = null;
        using (var reader = new StreamReader(path, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true))
        {
            for (string? text; (text = reader.ReadLine()) is not null;)
            {
                lineNo++;
                if (string.IsNullOrWhiteSpace(text)) continue;
                nonBlank++;
                try
                {
                    JsonNode? node;
                    try { node = JsonNode.Parse(text); }
                    catch (JsonException e) { throw new JsonlLineException($"{path}:{lineNo}: not valid JSON ({FirstSentence(e.Message)})"); }
                    if (node is not JsonObject obj) throw new JsonlLineException($"{path}:{lineNo}: expected a JSON object per line");
                    docs.Add(convert(new JsonlRow(path, lineNo, obj)));
                }
                catch (JsonlLineException e)
                {
                    if (!options.SkipBadLines) throw RecurUserException.About(e.Message + " (SkipBadLines skips and counts such lines)", "SkipBadLines");
                    skipped++;
                    firstSkip ??= e.Message;
                }
                if (options.Limit is int l && docs.Count == l) break;
            }
        }
        if (nonBlank == 0) throw new RecurUserException($"{path}: file is empty; expected one JSON object per line");
        if (docs.Count == 0) throw new RecurUserException($"{path}: no usable lines ({skipped} bad lines skipped; first: {firstSkip})");
        if (skipped > 0) warnings.Add($"{path}: skipped {skipped} bad line{(skipped == 1 ? "" : "s")}; first: {firstSkip}");
        if (options.Limit is int want && want > docs.Count)
            warnings.Add($"{path}: limit {want} is larger than the {docs.Count} examples available; using all {docs.Count}");
        return new TaskData<T>(path, docs, skipped, warnings);
    }

    static string FirstSentence(string s)
    {
        int i = s.IndexOf(". ", StringComparison.Ordinal);
        return i < 0 ? s.TrimEnd('.') : s[..i];
    }
}
