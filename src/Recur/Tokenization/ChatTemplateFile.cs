using System.Text.Json;
using Recur.Engine;

namespace Recur.Tokenization;

/// <summary>Finds the Jinja chat template stored beside a tokenizer, and the chat format a model is used with.</summary>
public static class ChatTemplateFile
{
    /// <summary>
    /// The chat format for <paramref name="name"/> (<c>RecurLoadOptions.ChatTemplate</c>): <c>auto</c> recognises the
    /// chat_template stored beside <paramref name="tokenizer"/> (<see cref="ChatTemplate.Detect"/>; the character
    /// tokenizer has none: plain), any other name is <see cref="ChatTemplate.Named"/>. The one resolver of the library
    /// facade and the chat and serve verbs.
    /// </summary>
    public static ChatTemplate Resolve(string name, ITokenizer tokenizer, Action<string>? notice = null)
    {
        string? bos = tokenizer.BosId is int b ? tokenizer.IdToToken(b) : null;
        string? eos = tokenizer.EosId is int e ? tokenizer.IdToToken(e) : null;
        if (!name.Equals("auto", StringComparison.OrdinalIgnoreCase)) return ChatTemplate.Named(name, bos, eos);
        return ChatTemplate.Detect(tokenizer is CharTokenizerAdapter ? null : Read(tokenizer.SourcePath), bos, eos,
            notice: notice is null ? null : s => notice($"{s} (choose one with RecurLoadOptions.ChatTemplate)"));
    }

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
