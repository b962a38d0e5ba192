using System.Text.Json.Serialization;

namespace Recur.Data;

/// <summary>How the files of a source are read (docs/data.md, "Formats").</summary>
[JsonConverter(typeof(JsonStringEnumConverter<SourceFormat>))]
public enum SourceFormat
{
    /// <summary>By file extension: <c>.parquet</c>, <c>.jsonl</c>/<c>.json</c>, anything else plain text (<c>.gz</c> is looked through).</summary>
    [JsonStringEnumMemberName("auto")] Auto,
    /// <summary>Plain UTF-8 text; see <see cref="TextUnit"/>.</summary>
    [JsonStringEnumMemberName("text")] Text,
    /// <summary>One JSON object per line.</summary>
    [JsonStringEnumMemberName("jsonl")] Jsonl,
    /// <summary>Parquet files as the Hugging Face hub stores datasets (string columns, any number of row groups).</summary>
    [JsonStringEnumMemberName("parquet")] Parquet,
    /// <summary>JSONL or Parquet rows with <c>question</c> and <c>answer</c>, written as <see cref="DataSourceSpec.Gsm8kTemplate"/>.</summary>
    [JsonStringEnumMemberName("gsm8k")] Gsm8k,
}

/// <summary>What one document is in a plain-text file.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<TextUnit>))]
public enum TextUnit
{
    /// <summary>The whole file (a book, an article, a source file).</summary>
    [JsonStringEnumMemberName("file")] File,
    /// <summary>Each run of text between blank lines (lines holding only whitespace count as blank).</summary>
    [JsonStringEnumMemberName("paragraph")] Paragraph,
}

/// <summary>One corpus of a <see cref="DataSpec"/>: a file or a folder of files, and how to turn them into documents.</summary>
public sealed record DataSourceSpec
{
    /// <summary>The preset of <see cref="SourceFormat.Gsm8k"/>: question and worked answer in one document.</summary>
    public const string Gsm8kTemplate = "Question: {question}\nAnswer: {answer}";

    /// <summary>The text fields used when neither <see cref="Fields"/> nor <see cref="Template"/> is set.</summary>
    public static readonly IReadOnlyList<string> DefaultFields = ["text"];

    /// <summary>A file, or a folder whose data files (recursively, in ordinal path order) all belong to this source.</summary>
    [JsonPropertyName("path")] public string Path { get; init; } = "";

    /// <summary>Relative share of training rows when several sources are mixed (normalised over the sources).</summary>
    [JsonPropertyName("weight")] public double Weight { get; init; } = 1.0;

    [JsonPropertyName("format")] public SourceFormat Format { get; init; } = SourceFormat.Auto;

    /// <summary>JSONL keys / Parquet columns whose values, joined by a blank line, form the document. Default <c>["text"]</c>.</summary>
    [JsonPropertyName("fields")] public IReadOnlyList<string>? Fields { get; init; }

    /// <summary>
    /// Instead of <see cref="Fields"/>: a text with <c>{field}</c> placeholders filled from each
    /// record (<c>{{</c> and <c>}}</c> stand for literal braces).
    /// </summary>
    [JsonPropertyName("template")] public string? Template { get; init; }

    [JsonPropertyName("text_unit")] public TextUnit TextUnit { get; init; } = TextUnit.File;

    /// <summary>Skip (and count) malformed JSONL lines and Parquet rows with missing values instead of failing.</summary>
    [JsonPropertyName("skip_bad_lines")] public bool SkipBadLines { get; init; }

    /// <summary>The template that turns one record into a document, from <see cref="Format"/>, <see cref="Template"/> and <see cref="Fields"/>.</summary>
    [JsonIgnore]
    public string EffectiveTemplate =>
        Format == SourceFormat.Gsm8k ? Gsm8kTemplate
        : Template ?? string.Join("\n\n", (Fields ?? DefaultFields).Select(f => "{" + f.Replace("{", "{{").Replace("}", "}}") + "}"));
}
