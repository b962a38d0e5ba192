using System.Text.Json;
using Recur.Engine;

namespace Recur.Serving;

/// <summary>One prompt of a completions request: its text, or its token ids (exactly one is set).</summary>
public sealed record PromptInput(string? Text, int[]? Ids);

/// <summary>
/// The fields of an OpenAI <c>/v1/completions</c> or <c>/v1/chat/completions</c> body that Recur uses,
/// validated. Completions have <see cref="Prompts"/> (one or more), chat has <see cref="Messages"/>.
/// </summary>
/// <remarks>
/// The rule for fields (docs/serving.md, "Request fields"): every field either changes what the server does or is
/// refused. A field OpenAI defines that Recur does not implement is accepted only at its neutral value (absent,
/// null, 0 penalties, no tools, text output) and otherwise answered with a 400 naming it; fields that are only
/// bookkeeping for OpenAI (<c>user</c>, <c>metadata</c>, <c>store</c>, …) are accepted and have no effect on the
/// output; a field OpenAI does not define (a typo, another server's extension) is a 400 naming it, as OpenAI answers.
/// </remarks>
public sealed record OpenAiRequest
{
    public string? Model { get; init; }
    public IReadOnlyList<PromptInput> Prompts { get; init; } = [];
    public IReadOnlyList<ChatMessage>? Messages { get; init; }
    /// <summary>Null: the endpoint's default (16 for completions, the rest of the context for chat). Completions allow 0.</summary>
    public int? MaxTokens { get; init; }
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    public int TopK { get; init; }
    public long? Seed { get; init; }
    public IReadOnlyList<string> Stop { get; init; } = [];
    public bool Stream { get; init; }
    public bool IncludeUsageInStream { get; init; }
    /// <summary>Choices per prompt.</summary>
    public int N { get; init; } = 1;
    /// <summary>Completions: the prompt's tokens and their log-probabilities come back in front of the completion.</summary>
    public bool Echo { get; init; }
    /// <summary>
    /// Null: no log-probabilities. Otherwise how many of the most likely alternatives each position reports
    /// (completions' <c>logprobs: k</c>; chat's <c>logprobs: true</c> with <c>top_logprobs: k</c>).
    /// </summary>
    public int? Logprobs { get; init; }
    /// <summary>Recur's extension: the test-time recurrence T for recurrent models.</summary>
    public int? Recurrences { get; init; }

    public SamplingOptions Sampling => new(Temperature, TopK, TopP, Seed);

    /// <summary>Most alternatives per position a request may ask for (vLLM's default limit).</summary>
    public const int MaxLogprobs = 20;

    // Every field OpenAI defines for each endpoint, plus Recur's extensions (top_k, recurrences). Anything else is refused.
    static readonly HashSet<string> CompletionFields =
    [
        "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n", "presence_penalty",
        "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user", "top_k", "recurrences",
    ];
    static readonly HashSet<string> ChatFields =
    [
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
        "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream", "stream_options",
        "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity", "web_search_options", "top_k", "recurrences",
    ];

    /// <summary>
    /// Parses and validates a request body. Every problem is an <see cref="ApiException"/> 400 naming the
    /// field. Sampling fields follow OpenAI's ranges (temperature 0–2, top_p in (0, 1]).
    /// </summary>
    public static OpenAiRequest Parse(ReadOnlySpan<byte> body, bool chat, int maxRecurrences, int maxChoices = 16, int maxPrompts = 1024)
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
        CheckFields(root, chat);

        var r = new OpenAiRequest
        {
            Model = OptString(root, "model"),
            MaxTokens = OptInt(root, chat && root.TryGetProperty("max_completion_tokens", out _) ? "max_completion_tokens" : "max_tokens", chat ? 1 : 0, int.MaxValue),
            Temperature = OptDouble(root, "temperature", 0, 2) ?? 1.0,
            TopP = OptDouble(root, "top_p", double.Epsilon, 1) ?? 1.0,
            TopK = OptInt(root, "top_k", 0, int.MaxValue) ?? 0,
            Seed = OptLong(root, "seed"),
            Stop = StopList(root),
            Stream = OptBool(root, "stream") ?? false,
            Recurrences = OptInt(root, "recurrences", 1, maxRecurrences),
            N = OptInt(root, "n", 1, maxChoices) ?? 1,
        };
        r = r with { IncludeUsageInStream = root.TryGetProperty("stream_options", out var so) && so.ValueKind == JsonValueKind.Object && OptBool(so, "include_usage", "stream_options.include_usage") == true };
        if (OptInt(root, "best_of", 1, int.MaxValue) is int bestOf && bestOf != r.N)
            throw Unsupported("best_of", $"best_of must equal n ({r.N}): Recur returns every choice it generates (got {bestOf})");

        if (chat)
        {
            bool wants = OptBool(root, "logprobs") ?? false;
            int? top = OptInt(root, "top_logprobs", 0, MaxLogprobs);
            if (top is not null && !wants) throw ApiException.BadValue("top_logprobs", "top_logprobs needs \"logprobs\": true");
            r = r with { Logprobs = wants ? top ?? 0 : null, Messages = ReadMessages(root) };
        }
        else
        {
            r = r with { Echo = OptBool(root, "echo") ?? false, Logprobs = OptInt(root, "logprobs", 0, MaxLogprobs), Prompts = ReadPrompts(root, maxPrompts) };
        }
        if (r.Stream && (r.Prompts.Count > 1 || r.N > 1 || r.Echo || r.Logprobs is not null))
        {
            string param = r.Prompts.Count > 1 ? "prompt" : r.N > 1 ? "n" : r.Echo ? "echo" : "logprobs";
            throw Unsupported("stream", $"stream is supported for one prompt and one choice without echo or logprobs; drop stream or {param}");
        }
        return r;
    }

    static ApiException Unsupported(string param, string message) => new(400, message, param: param, code: "unsupported_parameter");

    /// <summary>The field rule of the remarks above: unknown fields and non-neutral values of unimplemented ones are refused.</summary>
    static void CheckFields(JsonElement root, bool chat)
    {
        var known = chat ? ChatFields : CompletionFields;
        string endpoint = chat ? "/v1/chat/completions" : "/v1/completions";
        foreach (var p in root.EnumerateObject())
        {
            if (!known.Contains(p.Name))
                throw new ApiException(400, $"unrecognized request field '{p.Name}' for {endpoint} (see docs/serving.md for the fields Recur accepts)", param: p.Name, code: "unknown_parameter");
            var v = p.Value;
            if (v.ValueKind == JsonValueKind.Null) continue;
            bool neutral = p.Name switch
            {
                "presence_penalty" or "frequency_penalty" => v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double x) && x == 0,
                "logit_bias" => v.ValueKind == JsonValueKind.Object && !v.EnumerateObject().Any(),
                "suffix" => v.ValueKind == JsonValueKind.String && v.GetString() == "",
                "tools" or "functions" => v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 0,
                // Without tools "auto" means "none".
                "tool_choice" or "function_call" => v.ValueKind == JsonValueKind.String && v.GetString() is "none" or "auto"
                    && !(root.TryGetProperty(p.Name == "tool_choice" ? "tools" : "functions", out var t) && t.ValueKind == JsonValueKind.Array && t.GetArrayLength() > 0),
                "response_format" => v.ValueKind == JsonValueKind.Object && v.TryGetProperty("type", out var ty) && ty.ValueKind == JsonValueKind.String && ty.GetString() == "text",
                "modalities" => v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(m => m.ValueKind == JsonValueKind.String && m.GetString() == "text"),
                "audio" or "prediction" or "web_search_options" or "reasoning_effort" or "verbosity" => false,
                _ => true,
            };
            if (!neutral)
                throw Unsupported(p.Name, p.Name switch
                {
                    "presence_penalty" or "frequency_penalty" => $"{p.Name} is not supported (only 0)",
                    "tools" or "functions" or "tool_choice" or "function_call" or "parallel_tool_calls" => $"{p.Name}: tool calls are not supported (send no tools)",
                    "response_format" => "response_format: only {\"type\": \"text\"} is supported (no JSON mode or schemas)",
                    _ => $"{p.Name} is not supported by Recur (leave it out or null)",
                });
        }
    }

    /// <summary>
    /// A string, a list of token ids, or a list of either (OpenAI's four prompt forms); at most <paramref name="max"/> prompts.
    /// </summary>
    static List<PromptInput> ReadPrompts(JsonElement root, int max)
    {
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind == JsonValueKind.Null)
            throw new ApiException(400, "missing required field 'prompt'", param: "prompt", code: "missing_field");
        const string shape = "prompt must be a string, a list of token ids, or a list of strings or of token-id lists";
        if (prompt.ValueKind == JsonValueKind.String) return [new(prompt.GetString(), null)];
        if (prompt.ValueKind != JsonValueKind.Array || prompt.GetArrayLength() == 0) throw ApiException.BadValue("prompt", shape);
        if (prompt[0].ValueKind == JsonValueKind.Number) return [new(null, Ids(prompt))];
        int count = prompt.GetArrayLength();
        if (count > max) throw ApiException.BadValue("prompt", $"a request may hold at most {max} prompts (got {count}); split it");
        var list = new List<PromptInput>(count);
        var kind = prompt[0].ValueKind;
        foreach (var p in prompt.EnumerateArray())
        {
            if (p.ValueKind != kind) throw ApiException.BadValue("prompt", "a list of prompts must hold only strings or only token-id lists");
            list.Add(kind switch
            {
                JsonValueKind.String => new(p.GetString(), null),
                JsonValueKind.Array => new(null, Ids(p)),
                _ => throw ApiException.BadValue("prompt", shape),
            });
        }
        return list;
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
