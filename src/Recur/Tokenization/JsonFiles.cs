using System.Text.Json;

namespace Recur.Tokenization;

/// <summary>Reads the JSON files around a tokenizer and turns every failure into a one-line user error naming the file.</summary>
internal static class JsonFiles
{
    public static JsonDocument ReadObject(string path, string expected)
    {
        JsonDocument doc;
        try
        {
            using var stream = File.OpenRead(path);
            doc = JsonDocument.Parse(stream, new JsonDocumentOptions { MaxDepth = 256 });
        }
        catch (JsonException e)
        {
            throw new RecurUserException($"Cannot read '{path}': it is not valid JSON ({e.Message}); expected {expected}.", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new RecurUserException($"Cannot read '{path}': {e.Message}; expected {expected}.", e);
        }

        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = doc.RootElement.ValueKind;
            doc.Dispose();
            throw new RecurUserException($"Cannot read '{path}': its top level is {kind}; expected {expected}.");
        }
        return doc;
    }

    public static RecurUserException Bad(string path, string what) =>
        new($"Cannot use '{path}': {what}.");
}
