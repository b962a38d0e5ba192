using System.Text.Encodings.Web;
using System.Text.Json;

namespace Recur.Data;

/// <summary>JSONL output shared by the synthetic data generators (SynthMath, VariableChains).</summary>
public static class JsonLines
{
    /// <summary>
    /// Writes one JSON object per item and a "\n" after each, on every OS. The relaxed encoder keeps '+', '&lt;', '&gt;'
    /// and '$' readable instead of \u002B escapes; the bytes are the same everywhere.
    /// </summary>
    public static void Write<T>(Stream stream, IEnumerable<T> items, Action<Utf8JsonWriter, T> fields)
    {
        var options = new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, Indented = false };
        using var writer = new Utf8JsonWriter(stream, options);
        foreach (var item in items)
        {
            writer.WriteStartObject();
            fields(writer, item);
            writer.WriteEndObject();
            writer.Flush();
            writer.Reset();
            stream.WriteByte((byte)'\n');
        }
    }
}
