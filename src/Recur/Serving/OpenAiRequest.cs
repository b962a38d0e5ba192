using System.Text.Json;
using Recur.Engine;

namespace Recur.Serving;

/// <summary>
/// The fields of an OpenAI <c>/v1/completions</c> or <c>/v1/chat/completions</c> body that Recur uses,
/// validated. Exactly one of <see cref="Prompt"/>, <see cref="PromptIds"/> and <see cref="Messages"/> is set.
/// </summary>
public sealed record OpenAiRequest
{
    public string? Model { get; init; }
    public string? Prompt { get; init; }
    public int[]? PromptIds { get; init; }
    public IReadOnlyList<ChatMessage>? Messages { get; init; }
    /// <summary>Null: the endpoint's default (16 for completions, the rest of the context for chat).</summary>
    public int? MaxTokens { get; init; }
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int TopK { get; init; }
    public long? Seed { get; init; }
    public IReadOnlyList<string> Stop { get; init; } = [];
    public bool Stream { get; init; }
    public bool IncludeUsageInStream { get; init; }
    /// <summary>Recur's extension: the test-time recurrence T for recurrent models.</summary>
    public int? Recurrences { get; init; }

    public SamplingOptions Sampling => new(Temperature, TopK, TopP, Seed);

    /// <summary>
    /// Parses and validates a request body. Every problem is an <see cref="ApiException"/> 400 naming the
    /// field. Sampling fields follow OpenAI's ranges (temperature 0–2, top_p in (0, 1]); <c>n</c> must be 1.
    /// </summary>
    public static OpenAiRequest Parse(ReadOnlySpan<byte> body, bool chat, int maxRecurrences)
    {
        // JSON is UTF-8 (RFC 8259 §8.1); invalid bytes would otherwise surface later as an internal error.
        if (!System.Text.Unicode.Utf8.IsValid(body)) throw new ApiException(400, "the request body is not valid UTF-8", code: "invalid_encoding");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(body.ToArray(), new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (JsonException e)
        {
            throw new ApiException(400, $"the request body is not valid JSON: {e.Message}", code: "invalid_json");
        }
        using var owned = doc;
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new ApiException(400, $"the request body must be a JSON object (got {root.ValueKind})", code: "invalid_json");

        var r = new OpenAiRequest
        {
            Model = OptString(root, "model"),
            MaxTokens = OptInt(root, chat && root.TryGetProperty("max_completion_tokens", out _) ? "max_completion_tokens" : "max_tokens", 1, int.MaxValue),
            Temperature = OptDouble(root, "temperature", 0, 2) ?? 1.0,
            TopP = OptDouble(root, "top_p", double.Epsilon, 1) ?? 1.0,
            TopK = OptInt(root, "top_k", 0, int.MaxValue) ?? 0,
            Seed = OptLong(root, "seed"),
            Stop = StopList(root),
            Stream = OptBool(root, "stream") ?? false,
            Recurrences = OptInt(root, "recurrences", 1, maxRecurrences),
        };
        r = r with { IncludeUsageInStream = root.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object && OptBool(so, "include_usage", "stream_options.include_usage") == true };

        if (OptInt(root, "n", 1, int.MaxValue) is > 1) throw ApiException.BadValue("n", "n must be 1: Recur returns one choice per request");
        if (OptInt(root, "best_of", 1, int.MaxValue) is > 1) throw ApiException.BadValue("best_of", "best_of must be 1: Recur returns one choice per request");
        if (OptBool(root, "echo") == true) throw ApiException.BadValue("echo", "echo is not supported");
        if (root.TryGetProperty("logprobs", out var lp) && lp.ValueKind is not (JsonValueKind.Null or JsonValueKind.False))
            throw ApiException.BadValue("logprobs", "logprobs are not supported");
        foreach (var p in new[] { "presence_penalty", "frequency_penalty" })
            if (OptDouble(root, p, -2, 2) is double v && v != 0) throw ApiException.BadValue(p, $"{p} is not supported (only 0)");

        if (chat) return r with { Messages = ReadMessages(root) };
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            throw new ApiException(400, "missing required field 'prompt'", param: "prompt", code: "missing_field");
        return prompt.ValueKind switch
        {
            JsonValueKind.String => r with { Prompt = prompt.GetString() },
            JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind == JsonValueKind.String => r with { Prompt = prompt[0].GetString() },
            JsonValueKind.Array when prompt.GetArrayLength() == 1 && prompt[0].ValueKind == JsonValueKind.Array => r with { PromptIds = Ids(prompt[0]) },
            JsonValueKind.Array when prompt.GetArrayLength() > 0 && prompt[0].ValueKind == JsonValueKind.Number => r with { PromptIds = Ids(prompt) },
            JsonValueKind.Array when prompt.GetArrayLength() > 1 => throw ApiException.BadValue("prompt", "only one prompt per request is supported"),
            _ => throw ApiException.BadValue("prompt", "prompt must be a string or a list of token ids"),
        };
    }

    static int[] Ids(JsonElement array)
    {
        var ids = new int[array.GetArrayLength()];
        int i = 0;
        foreach (var e in array.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out ids[i]))
                throw ApiException.BadValue("prompt", "a token-id prompt must hold integers only");
            i++;
        }
        if (ids.Length == 0) throw ApiException.BadValue("prompt", "the prompt is empty");
        return ids;
    }

    static List<ChatMessage> ReadMessages(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var ms) || ms.ValueKind == JsonValueKind.Null)
            throw new ApiException(400, "missing required field 'messages'", param: "messages", code: "missing_field");
        if (ms.ValueKind != JsonValueKind.Array || ms.GetArrayLength() == 0)
            throw ApiException.BadValue("messages", "messages must be a non-empty list of {\"role\", \"content\"} objects");
        var list = new List<ChatMessage>();
        int i = 0;
        foreach (var m in ms.EnumerateArray())
        {
            string param = $"messages[{i}]";
            if (m.ValueKind != JsonValueKind.Object) throw ApiException.BadValue(param, $"{param} must be an object with \"role\" and \"content\"");
            string role = OptString(m, "role", $"{param}.role") ?? throw ApiException.BadValue($"{param}.role", $"{param} has no role");
            // OpenAI's newer name for the system role.
            if (role == "developer") role = "system";
            if (role is not ("system" or "user" or "assistant"))
                throw ApiException.BadValue($"{param}.role", $"{param}.role '{role}' is not supported; expected system, user or assistant");
            list.Add(new ChatMessage(role, Content(m, $"{param}.content")));
            i++;
        }
        return list;
    }

    // Content is a string or a list of parts; only text parts can be used by a text model.
    static string Content(JsonElement m, string param)
    {
        if (!m.TryGetProperty("content", out var c) || c.ValueKind == JsonValueKind.Null) throw ApiException.BadValue(param, $"{param} is missing");
        if (c.ValueKind == JsonValueKind.String) return c.GetString()!;
        if (c.ValueKind != JsonValueKind.Array) throw ApiException.BadValue(param, $"{param} must be a string or a list of text parts");
        var sb = new System.Text.StringBuilder();
        foreach (var part in c.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object || OptString(part, "type", param) != "text" || OptString(part, "text", param) is not string text)
                throw ApiException.BadValue(param, $"{param}: only {{\"type\": \"text\", \"text\": …}} parts are supported");
            sb.Append(text);
        }
        return sb.ToString();
    }

    static IReadOnlyList<string> StopList(JsonElement root)
    {
        if (!root.TryGetProperty("stop", out var s) || s.ValueKind == JsonValueKind.Null) return [];
        List<string> list = s.ValueKind switch
        {
            JsonValueKind.String => [s.GetString()!],
            JsonValueKind.Array => [.. s.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : throw ApiException.BadValue("stop", "stop must be a string or a list of strings"))],
            _ => throw ApiException.BadValue("stop", "stop must be a string or a list of strings"),
        };
        if (list.Count > 4) throw ApiException.BadValue("stop", $"stop takes at most 4 sequences (got {list.Count})");
        if (list.Any(x => x.Length == 0)) throw ApiException.BadValue("stop", "stop sequences must not be empty");
        return list;
    }

    static string? OptString(JsonElement o, string name, string? param = null)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw ApiException.BadValue(param ?? name, $"{param ?? name} must be a string (got {v.ValueKind})");
    }

    static bool? OptBool(JsonElement o, string name, string? param = null)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw ApiException.BadValue(param ?? name, $"{param ?? name} must be true or false (got {v.ValueKind})"),
        };
    }

    static int? OptInt(JsonElement o, string name, int min, int max)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x))
            throw ApiException.BadValue(name, $"{name} must be an integer (got {Show(v)})");
        if (x < min || x > max)
            throw ApiException.BadValue(name, max == int.MaxValue ? $"{name} must be ≥ {min} (got {x})" : $"{name} must be between {min} and {max} (got {x})");
        return (int)x;
    }

    static long? OptLong(JsonElement o, string name)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long x) ? x : throw ApiException.BadValue(name, $"{name} must be an integer (got {Show(v)})");
    }

    static double? OptDouble(JsonElement o, string name, double min, double max)
    {
        if (!o.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double x) || !double.IsFinite(x))
            throw ApiException.BadValue(name, $"{name} must be a number (got {Show(v)})");
        if (x < min || x > max)
            throw ApiException.BadValue(name, min == double.Epsilon ? $"{name} must be in (0, {max}] (got {x})" : $"{name} must be between {min} and {max} (got {x})");
        return x;
    }

    static string Show(JsonElement v) => v.ValueKind == JsonValueKind.String ? $"\"{v.GetString()}\"" : v.GetRawText();
}
