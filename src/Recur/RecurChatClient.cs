using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.Extensions.AI;
using Recur.Engine;
using Recur.Serving;
using AI = Microsoft.Extensions.AI;

namespace Recur;

/// <summary>
/// A <see cref="IChatClient"/> (Microsoft.Extensions.AI) over a <see cref="RecurModel"/>: renders the conversation with the
/// model's chat template, generates the reply, and reports token usage. Supported <see cref="ChatOptions"/>:
/// <see cref="ChatOptions.MaxOutputTokens"/>, <see cref="ChatOptions.Temperature"/> (0 or unset: greedy),
/// <see cref="ChatOptions.TopP"/>, <see cref="ChatOptions.TopK"/>, <see cref="ChatOptions.Seed"/>,
/// <see cref="ChatOptions.StopSequences"/>, and the test-time recurrence T of a recurrent model as
/// <c>AdditionalProperties["recurrences"]</c> (an integer ≥ 1). Tools and response formats are not supported.
/// Requests run one at a time on the model.
/// </summary>
/// <example>
/// <code>
/// using var model = RecurModel.Load("models/tinyllama-chat-484");
/// IChatClient chat = new RecurChatClient(model);
/// var reply = await chat.GetResponseAsync("What is 6 × 7?", new ChatOptions
/// {
///     MaxOutputTokens = 64,
///     AdditionalProperties = new() { ["recurrences"] = 8 },
/// });
/// Console.WriteLine(reply.Text);
/// </code>
/// </example>
public sealed class RecurChatClient : IChatClient
{
    /// <summary>Key of <see cref="ChatOptions.AdditionalProperties"/> that sets the test-time recurrence T.</summary>
    public const string RecurrencesKey = "recurrences";

    readonly bool _ownsModel;
    readonly ChatClientMetadata _metadata;

    /// <param name="model">A model with a tokenizer.</param>
    /// <param name="modelId">Reported as the response's and metadata's model id; default: the model folder's name.</param>
    /// <param name="ownsModel">Dispose <paramref name="model"/> with this client.</param>
    /// <param name="defaultMaxOutputTokens">Reply budget when <see cref="ChatOptions.MaxOutputTokens"/> is unset (capped by the context left).</param>
    public RecurChatClient(RecurModel model, string? modelId = null, bool ownsModel = false, int defaultMaxOutputTokens = 512)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Tokenizer is null) throw new RecurUserException($"{model.Path ?? "model"}: no tokenizer; a chat client needs one (RecurLoadOptions.Tokenizer)");
        ArgumentOutOfRangeException.ThrowIfLessThan(defaultMaxOutputTokens, 1);
        Model = model;
        _ownsModel = ownsModel;
        DefaultMaxOutputTokens = defaultMaxOutputTokens;
        ModelId = modelId ?? (model.Path is { } p ? System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(p))) : "recur");
        _metadata = new ChatClientMetadata("recur", null, ModelId);
    }

    /// <summary>The model this client runs.</summary>
    public RecurModel Model { get; }

    /// <summary>The model id reported in responses.</summary>
    public string ModelId { get; }

    /// <summary>Reply budget when a request sets no <see cref="ChatOptions.MaxOutputTokens"/>.</summary>
    public int DefaultMaxOutputTokens { get; }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<AI.ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (request, template) = BuildRequest(messages, options);
        var result = await Task.Run(() => Model.Run(request, null, cancellationToken), cancellationToken).ConfigureAwait(false);
        var message = new AI.ChatMessage(ChatRole.Assistant, Clean(result.Text, template, trimStart: true)) { MessageId = NewId() };
        return new ChatResponse(message)
        {
            ResponseId = message.MessageId,
            ModelId = ModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = Finish(result),
            Usage = Usage(result),
        };
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<AI.ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (request, template) = BuildRequest(messages, options);
        string id = NewId();
        var created = DateTimeOffset.UtcNow;
        bool started = false;
        await foreach (var piece in Model.StreamRequest(request, cancellationToken).ConfigureAwait(false))
        {
            if (piece.Result is { } result)
            {
                yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(Usage(result))])
                {
                    ResponseId = id, MessageId = id, ModelId = ModelId, CreatedAt = created, FinishReason = Finish(result),
                };
                yield break;
            }
            // The plain format's reply starts after "Assistant:"; the model's first space is not part of it.
            string text = Clean(piece.Text!, template, trimStart: !started);
            if (text.Length == 0) continue;
            started = true;
            yield return new ChatResponseUpdate(ChatRole.Assistant, text) { ResponseId = id, MessageId = id, ModelId = ModelId, CreatedAt = created };
        }
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType == typeof(RecurModel)) return Model;
        if (serviceType.IsInstanceOfType(this)) return this;
        return null;
    }

    /// <summary>Disposes the model when this client owns it.</summary>
    public void Dispose()
    {
        if (_ownsModel) Model.Dispose();
    }

    (TextRequest Request, ChatTemplate Template) BuildRequest(IEnumerable<AI.ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var tok = Model.Tokenizer!;
        var template = Model.ChatTemplate;
        var system = new List<string>();
        var turns = new List<Engine.ChatMessage>();
        foreach (var m in messages)
        {
            string text = m.Text;
            if (m.Role == ChatRole.System) system.Add(text);
            else if (m.Role == ChatRole.User) turns.Add(Engine.ChatMessage.User(text));
            else if (m.Role == ChatRole.Assistant) turns.Add(Engine.ChatMessage.Assistant(text));
            else throw new NotSupportedException($"RecurChatClient: messages with role '{m.Role}' are not supported (system, user and assistant are)");
        }
        if (turns.Count == 0) throw new ArgumentException("the conversation has no user or assistant message", nameof(messages));

        int? max = options?.MaxOutputTokens;
        if (max is < 1) throw new RecurUserException($"MaxOutputTokens must be ≥ 1 (got {max})");
        int context = Model.ContextLength;
        int reserve = max ?? Math.Min(DefaultMaxOutputTokens, Math.Max(1, context / 4));
        if (reserve >= context)
            throw new RecurUserException($"MaxOutputTokens {reserve} leaves no room for the conversation in the model's context of {context} tokens");

        // ChatSession renders the template and, when the conversation is too long, drops the oldest exchanges first.
        var session = new ChatSession(template, system.Count > 0 ? string.Join("\n\n", system) : null);
        foreach (var t in turns)
            if (t.Role == "user") session.AddUser(t.Content); else session.AddAssistant(t.Content);
        var (ids, _) = session.BuildPrompt(tok.Encode, context - reserve);
        int maxNew = max ?? Math.Min(DefaultMaxOutputTokens, context - ids.Length);

        var sampling = new SamplingOptions(options?.Temperature ?? 0.0, options?.TopK ?? 0, options?.TopP ?? 1.0, options?.Seed).Validate();
        int? recurrences = Recurrences(options);
        var stops = template.StopStrings.Concat(options?.StopSequences ?? []).Where(s => s.Length > 0).ToList();
        int[] endOfTurn = [.. template.EndOfTurnTokens.Select(tok.TokenToId).OfType<int>()];
        return (new TextRequest(ids, maxNew, sampling, recurrences, stops, endOfTurn, TextLayout.ChatReply), template);
    }

    static int? Recurrences(ChatOptions? options)
    {
        if (options?.AdditionalProperties is not { } props || !props.TryGetValue(RecurrencesKey, out object? v) || v is null) return null;
        int? t = v switch
        {
            int i => i,
            long l when l is >= int.MinValue and <= int.MaxValue => (int)l,
            short s => s,
            string s when int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) => i,
            JsonElement { ValueKind: JsonValueKind.Number } e when e.TryGetInt32(out int i) => i,
            JsonElement { ValueKind: JsonValueKind.String } e when int.TryParse(e.GetString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) => i,
            _ => null,
        };
        if (t is not { } n || n < 1)
            throw new RecurUserException($"AdditionalProperties[\"{RecurrencesKey}\"] must be an integer ≥ 1 (got '{v}')");
        return n;
    }

    static string Clean(string text, ChatTemplate template, bool trimStart) =>
        trimStart && template.Format == ChatFormat.Plain ? text.TrimStart() : text;

    static ChatFinishReason Finish(TextResult r) => r.FinishReason == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop;

    static UsageDetails Usage(TextResult r) => new()
    {
        InputTokenCount = r.PromptTokens,
        OutputTokenCount = r.CompletionTokens,
        TotalTokenCount = r.PromptTokens + r.CompletionTokens,
    };

    static string NewId() => $"chatcmpl-{Guid.NewGuid():N}";
}
