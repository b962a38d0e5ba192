using System.Text.Json;
using System.Text.Json.Serialization;

namespace Recur.Data;

/// <summary>How far the training stream has read one source.</summary>
public sealed record SourceCursor
{
    [JsonPropertyName("path")] public string Path { get; init; } = "";
    /// <summary>Training rows drawn from this source so far, over all epochs.</summary>
    [JsonPropertyName("rows")] public long Rows { get; init; }
    /// <summary>Current epoch of this source (its rows are shuffled with seed + epoch).</summary>
    [JsonPropertyName("epoch")] public long Epoch { get; init; }
    /// <summary>Index of the next row in this epoch's shuffled order.</summary>
    [JsonPropertyName("position")] public long Position { get; init; }
}

/// <summary>
/// The checkpointable position of a <see cref="DataLoader"/> (STYLE §7: all randomness is
/// checkpointable). The order is a pure function of the seed, the epoch and these counts, so
/// there is no generator state to store: restoring the counts replays exactly the same batches.
/// </summary>
public sealed record DataCursor
{
    public const int CurrentFormatVersion = 1;

    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = CurrentFormatVersion;
    /// <summary><see cref="PackedDataset.Fingerprint"/> of the data this cursor belongs to.</summary>
    [JsonPropertyName("dataset")] public string Dataset { get; init; } = "";
    [JsonPropertyName("seed")] public long Seed { get; init; }
    /// <summary>Global training rows served so far (all ranks together).</summary>
    [JsonPropertyName("rows")] public long Rows { get; init; }
    [JsonPropertyName("sources")] public IReadOnlyList<SourceCursor> Sources { get; init; } = [];

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Options);

    public static DataCursor FromJson(string json, string where = "data cursor")
    {
        try
        {
            return JsonSerializer.Deserialize<DataCursor>(json, Options)
                ?? throw new RecurUserException($"{where}: expected a JSON object, got null.");
        }
        catch (JsonException e)
        {
            throw new RecurUserException($"{where}: {e.Message}", e);
        }
    }
}
