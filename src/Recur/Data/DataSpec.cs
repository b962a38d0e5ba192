using System.Text.Json;
using System.Text.Json.Serialization;

namespace Recur.Data;

/// <summary>
/// What a training phase reads (METHOD §5): sources and their mixture weights, the packed row
/// length, the held-out split and the order seed. Deserialises from JSON with snake_case keys:
/// <code>
/// {"sources": [{"path": "fineweb", "weight": 1}, {"path": "gsm8k/train.jsonl", "format": "gsm8k"}],
///  "seq_len": 1024, "val_fraction": 0.005, "seed": 74}
/// </code>
/// </summary>
public sealed record DataSpec
{
    [JsonPropertyName("sources")] public IReadOnlyList<DataSourceSpec> Sources { get; init; } = [];

    /// <summary>Tokens a model sees per row; packed rows hold <c>seq_len + 1</c> tokens (METHOD §4.1: 1024).</summary>
    [JsonPropertyName("seq_len")] public int SeqLen { get; init; } = 1024;

    /// <summary>Share of each source's packed rows held out for validation (its last rows).</summary>
    [JsonPropertyName("val_fraction")] public double? ValFraction { get; init; }

    /// <summary>Instead of <see cref="ValFraction"/>: the number of rows held out from each source.</summary>
    [JsonPropertyName("val_rows")] public long? ValRows { get; init; }

    /// <summary>Seed of the row order (METHOD §4.1: 74).</summary>
    [JsonPropertyName("seed")] public long Seed { get; init; } = 74;

    private static readonly JsonSerializerOptions ReadOptions = new()
    {
        // A misspelt key ("val_fracton") must not silently fall back to a default.
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    private static readonly JsonSerializerOptions WriteOptions = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Reads a spec file; relative source paths are taken relative to the file's folder. Validates it.</summary>
    public static DataSpec Load(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (!System.IO.File.Exists(full))
            throw new RecurUserException($"Data spec not found: '{full}' does not exist.");
        return FromJson(System.IO.File.ReadAllText(full), System.IO.Path.GetDirectoryName(full)!, full);
    }

    /// <summary>Parses <paramref name="json"/>, resolves relative paths against <paramref name="baseDirectory"/> and validates.</summary>
    public static DataSpec FromJson(string json, string baseDirectory, string where = "data spec")
    {
        DataSpec? spec;
        try
        {
            spec = JsonSerializer.Deserialize<DataSpec>(json, ReadOptions);
        }
        catch (JsonException e)
        {
            throw new RecurUserException($"{where}: {e.Message}", e);
        }
        if (spec is null)
            throw new RecurUserException($"{where}: expected a JSON object with \"sources\" and \"seq_len\", got null.");
        spec = spec.ResolvePaths(baseDirectory);
        spec.Validate(where);
        return spec;
    }

    /// <summary>The spec as indented JSON (the layout <see cref="FromJson"/> reads).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, WriteOptions);

    /// <summary>This spec with every relative source path made absolute against <paramref name="baseDirectory"/>.</summary>
    public DataSpec ResolvePaths(string baseDirectory) => this with
    {
        Sources = [.. Sources.Select(s => string.IsNullOrWhiteSpace(s.Path) ? s : s with { Path = System.IO.Path.GetFullPath(s.Path, System.IO.Path.GetFullPath(baseDirectory)) })],
    };

    /// <summary>Throws <see cref="RecurUserException"/> naming the key and the expected value for the first problem found.</summary>
    public void Validate(string where = "data spec")
    {
        if (Sources is null || Sources.Count == 0)
            throw new RecurUserException($"{where}: \"sources\" is empty; expected at least one {{\"path\": ...}}.");
        if (SeqLen < 1)
            throw new RecurUserException($"{where}: \"seq_len\" must be ≥ 1 (got {SeqLen}).");
        if (ValFraction is not null && ValRows is not null)
            throw new RecurUserException($"{where}: set either \"val_fraction\" or \"val_rows\", not both.");
        if (ValFraction is double f && !(f >= 0 && f < 1))
            throw new RecurUserException($"{where}: \"val_fraction\" must be in [0, 1) (got {f}).");
        if (ValRows is long v && v < 0)
            throw new RecurUserException($"{where}: \"val_rows\" must be ≥ 0 (got {v}).");
        for (int i = 0; i < Sources.Count; i++)
        {
            var s = Sources[i];
            string at = $"{where}: sources[{i}]";
            if (s is null)
                throw new RecurUserException($"{at} is null; expected {{\"path\": ...}}.");
            if (string.IsNullOrWhiteSpace(s.Path))
                throw new RecurUserException($"{at}: \"path\" is missing; expected a file or folder.");
            if (!(s.Weight > 0) || double.IsInfinity(s.Weight))
                throw new RecurUserException($"{at} ('{s.Path}'): \"weight\" must be a positive number (got {s.Weight}).");
            if (!Enum.IsDefined(s.Format))
                throw new RecurUserException($"{at} ('{s.Path}'): unknown \"format\" {(int)s.Format}.");
            if (s.Fields is not null && s.Template is not null)
                throw new RecurUserException($"{at} ('{s.Path}'): set either \"fields\" or \"template\", not both.");
            if (s.Format == SourceFormat.Gsm8k && (s.Fields is not null || s.Template is not null))
                throw new RecurUserException($"{at} ('{s.Path}'): format \"gsm8k\" fixes the template ({Escape(DataSourceSpec.Gsm8kTemplate)}); use format \"jsonl\" or \"parquet\" with \"template\" to change it.");
            if (s.Format == SourceFormat.Text && (s.Fields is not null || s.Template is not null))
                throw new RecurUserException($"{at} ('{s.Path}'): \"fields\"/\"template\" do not apply to format \"text\" (a text file is its own document).");
            if (s.Fields is { } fields)
            {
                if (fields.Count == 0 || fields.Any(string.IsNullOrEmpty))
                    throw new RecurUserException($"{at} ('{s.Path}'): \"fields\" must list one or more non-empty field names.");
            }
            if (s.Template is { } t)
            {
                try
                {
                    if (DocumentTemplate.Parse(t).FieldNames.Count == 0)
                        throw new RecurUserException($"{at} ('{s.Path}'): \"template\" {Escape(t)} names no {{field}}.");
                }
                catch (FormatException e)
                {
                    throw new RecurUserException($"{at} ('{s.Path}'): \"template\" {Escape(t)}: {e.Message}");
                }
            }
            if (!Enum.IsDefined(s.TextUnit))
                throw new RecurUserException($"{at} ('{s.Path}'): unknown \"text_unit\" {(int)s.TextUnit}.");
        }
    }

    private static string Escape(string s) => JsonSerializer.Serialize(s);
}
