namespace Recur.Engine;

/// <summary>
/// The history of an interactive chat: an optional system message and the user/assistant turns so far.
/// <see cref="BuildPrompt"/> renders it with a <see cref="ChatTemplate"/> and drops the oldest exchanges
/// when the conversation no longer fits the model's context.
/// </summary>
public sealed class ChatSession
{
    readonly List<ChatMessage> _turns = [];

    public ChatSession(ChatTemplate template, string? system = null)
    {
        Template = template;
        System = string.IsNullOrWhiteSpace(system) ? null : system;
    }

    public ChatTemplate Template { get; }
    public string? System { get; }

    /// <summary>User and assistant turns, oldest first.</summary>
    public IReadOnlyList<ChatMessage> Turns => _turns;

    /// <summary>The system message (when set) followed by the turns.</summary>
    public IReadOnlyList<ChatMessage> Messages => System is null ? _turns : [ChatMessage.System(System), .. _turns];

    public void AddUser(string text) => _turns.Add(ChatMessage.User(text));
    public void AddAssistant(string text) => _turns.Add(ChatMessage.Assistant(text));

    /// <summary>Forgets every turn; the system message stays.</summary>
    public void Reset() => _turns.Clear();

    /// <summary>Removes the last turn when it is a user message (e.g. its reply failed).</summary>
    public void DropPendingUser()
    {
        if (_turns.Count > 0 && _turns[^1].Role == "user") _turns.RemoveAt(_turns.Count - 1);
    }

    /// <summary>
    /// Token ids of the whole conversation plus the assistant's opening, at most
    /// <paramref name="maxPromptTokens"/> long. Oldest turns are removed from the history (in whole
    /// user/assistant exchanges) until it fits; returns how many turns were removed. Throws
    /// <see cref="RecurUserException"/> when even the system message and the last user message do not fit.
    /// </summary>
    public (int[] Ids, int DroppedTurns) BuildPrompt(Func<string, bool, int[]> encode, int maxPromptTokens)
    {
        int dropped = 0;
        while (true)
        {
            var ids = encode(Template.Render(Messages), Template.AddSpecialTokens);
            if (ids.Length <= maxPromptTokens) return (ids, dropped);
            if (_turns.Count <= 1)
                throw new RecurUserException($"the message is too long: the prompt needs {ids.Length} tokens but at most {maxPromptTokens} fit beside the reply in the model's context");
            // Drop the oldest exchange: a user turn and the assistant reply after it.
            int n = _turns.Count >= 2 && _turns[0].Role == "user" && _turns[1].Role == "assistant" ? 2 : 1;
            _turns.RemoveRange(0, n);
            dropped += n;
        }
    }
}

/// <summary>What a line typed into <c>recur chat</c> means.</summary>
public abstract record ChatInput
{
    public sealed record Message(string Text) : ChatInput;
    public sealed record Exit : ChatInput;
    public sealed record Reset : ChatInput;
    public sealed record Help : ChatInput;
    /// <summary><c>/recurrences N</c>; <see cref="Value"/> is null for a bare <c>/recurrences</c> (show the current T).</summary>
    public sealed record Recurrences(int? Value) : ChatInput;
    public sealed record Invalid(string Error) : ChatInput;
    public sealed record Empty : ChatInput;

    public const string HelpText =
        "/recurrences N  set the test-time recurrence T (recurrent models); /recurrences shows it\n" +
        "/reset          forget the conversation (the system message stays)\n" +
        "/exit           quit (also /quit, Ctrl-D, or Ctrl-C twice at the prompt)\n" +
        "Ctrl-C while the model writes stops the reply. Start a line with // to send a message that begins with /.";

    /// <summary>Parses one input line: a slash command, or a message.</summary>
    public static ChatInput Parse(string? line)
    {
        if (line is null) return new Exit();
        string t = line.Trim();
        if (t.Length == 0) return new Empty();
        if (t.StartsWith("//", StringComparison.Ordinal)) return new Message(t[1..]);
        if (t[0] != '/') return new Message(t);
        var parts = t.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        string cmd = parts[0].ToLowerInvariant();
        switch (cmd)
        {
            case "/exit" or "/quit" or "/bye":
                return parts.Length == 1 ? new Exit() : new Invalid($"{cmd} takes no argument");
            case "/reset" or "/clear":
                return parts.Length == 1 ? new Reset() : new Invalid($"{cmd} takes no argument");
            case "/help" or "/?":
                return new Help();
            case "/recurrences" or "/t":
                if (parts.Length == 1) return new Recurrences(null);
                if (parts.Length == 2 && int.TryParse(parts[1], out int n) && n >= 1) return new Recurrences(n);
                return new Invalid($"usage: /recurrences N with N an integer ≥ 1 (got '{string.Join(' ', parts[1..])}')");
            default:
                return new Invalid($"unknown command {parts[0]}; /help lists the commands");
        }
    }
}
