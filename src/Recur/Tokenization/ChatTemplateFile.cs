using System.Text.Json;

namespace Recur.Tokenization;

/// <summary>Finds the Jinja chat template stored beside a tokenizer.</summary>
public static class ChatTemplateFile
{
    /// <summary>
    /// The chat template for the tokenizer file <paramref name="tokenizerFile"/>, or null when there is none.
    /// Looks, in the order transformers does, at <c>chat_template.jinja</c>, <c>chat_template.json</c>
    /// (<c>{"chat_template": …}</c>) and tokenizer_config.json's <c>chat_template</c>, which may be a string
    /// or a list of named templates (the one named <c>default</c> is used).
    /// </summary>
    public static string? Read(string tokenizerFile)
    {
        string dir = Path.GetDirectoryName(Path.GetFullPath(tokenizerFile)) ?? ".";
        string jinja = Path.Combine(dir, "chat_template.jinja");
        if (File.Exists(jinja)) return File.ReadAllText(jinja);
        foreach (var name in new[] { "chat_template.json", "tokenizer_config.json" })
        {
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) continue;
            using var doc = JsonFiles.ReadObject(path, $"a Hugging Face {name} object");
            if (!doc.RootElement.TryGetProperty("chat_template", out var t) || t.ValueKind == JsonValueKind.Null) continue;
            return t.ValueKind switch
            {
                JsonValueKind.String => t.GetString(),
                JsonValueKind.Array => Named(t, path),
                _ => throw JsonFiles.Bad(path, $"\"chat_template\" is {t.ValueKind}, expected a string or a list of {{\"name\", \"template\"}}"),
            };
        }
        return null;
    }

    static string? Named(JsonElement list, string path)
    {
        string? first = null;
        foreach (var item in list.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Object
                || !item.TryGetProperty("template", out var tpl) || tpl.ValueKind != JsonValueKind.String)
                throw JsonFiles.Bad(path, "\"chat_template\" list holds an entry without a \"template\" string");
            string? name = item.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString() : null;
            if (name == "default") return tpl.GetString();
            first ??= tpl.GetString();
        }
        return first;
    }
}
