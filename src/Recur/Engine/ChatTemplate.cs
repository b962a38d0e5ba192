using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Recur.Engine;

/// <summary>One message of a conversation. Role is <c>system</c>, <c>user</c> or <c>assistant</c>.</summary>
public sealed record ChatMessage(string Role, string Content)
{
    public static ChatMessage System(string content) => new("system", content);
    public static ChatMessage User(string content) => new("user", content);
    public static ChatMessage Assistant(string content) => new("assistant", content);
}

/// <summary>The prompt layouts Recur can render.</summary>
public enum ChatFormat
{
    /// <summary><c>User: …\nAssistant:</c>, for base models and templates Recur does not recognise.</summary>
    Plain,
    /// <summary>Llama 3 headers: <c>&lt;|start_header_id|&gt;role&lt;|end_header_id|&gt;\n\n…&lt;|eot_id|&gt;</c>.</summary>
    Llama3,
    /// <summary>ChatML: <c>&lt;|im_start|&gt;role\n…&lt;|im_end|&gt;\n</c> (Qwen, SmolLM, OLMo-2 instruct, …).</summary>
    ChatML,
    /// <summary>Llama 2 / Mistral: <c>[INST] … [/INST]</c>.</summary>
    Inst,
    /// <summary>Huginn-0125: <c>&lt;|begin_header|&gt;role&lt;|end_header|&gt;\n\n…&lt;|end_turn|&gt;</c>, the assistant called <c>Huginn</c>.</summary>
    Huginn,
}

/// <summary>
/// Renders a conversation into the prompt text a chat model was trained on. Recur does not run Jinja:
/// <see cref="Detect"/> recognises the common template families by their marker strings and renders them
/// in C# (see docs/serving.md, "Chat templates"); anything else falls back to <see cref="ChatFormat.Plain"/>.
/// </summary>
public sealed class ChatTemplate
{
    // Llama 3.1+ templates always open with a system header that states these dates; 3.2 uses today's
    // date when the renderer offers strftime_now, 3.1 the fixed "26 Jul 2024" (tokenizer_config.json of
    // meta-llama/Llama-3.1-8B-Instruct and Llama-3.2-1B-Instruct).
    const string CuttingKnowledge = "Cutting Knowledge Date: December 2023\n";

    public ChatFormat Format { get; }
    readonly string _bos, _eos;
    readonly string? _dateString;      // Llama 3.1+: the "Today Date" line; null for plain Llama 3
    readonly bool _instSystemBlock;    // Llama 2's <<SYS>> block; Mistral prepends the system text to the first user turn
    readonly string? _defaultSystem;   // ChatML templates (Qwen) that insert a system message when none is given
    readonly bool _huginnAssistantAlias; // Huginn: assistant turns get the header "Huginn" (the released template); else the role verbatim
    readonly bool _huginnEndText;        // Huginn: without a generation prompt the template closes with <|end_text|>

    ChatTemplate(ChatFormat format, string? bos, string? eos, string? dateString = null, bool instSystemBlock = true, string? defaultSystem = null,
        bool huginnAssistantAlias = true, bool huginnEndText = true)
    {
        Format = format;
        _bos = bos ?? "";
        _eos = eos ?? "";
        _dateString = dateString;
        _instSystemBlock = instSystemBlock;
        _defaultSystem = defaultSystem;
        _huginnAssistantAlias = huginnAssistantAlias;
        _huginnEndText = huginnEndText;
    }

    /// <summary>A short name for messages: <c>plain</c>, <c>llama3</c>, <c>llama3.1</c>, <c>chatml</c>, <c>llama2</c>, <c>mistral</c>, <c>huginn</c>.</summary>
    public string Name => Format switch
    {
        ChatFormat.Llama3 => _dateString is null ? "llama3" : "llama3.1",
        ChatFormat.ChatML => "chatml",
        ChatFormat.Inst => _instSystemBlock ? "llama2" : "mistral",
        ChatFormat.Huginn => "huginn",
        _ => "plain",
    };

    /// <summary>
    /// Whether the rendered text is encoded with the tokenizer's own BOS policy. Real templates write
    /// <c>bos_token</c> themselves, so they are encoded without special tokens (as transformers'
    /// <c>apply_chat_template</c> does); the plain format relies on the tokenizer to add BOS.
    /// </summary>
    public bool AddSpecialTokens => Format == ChatFormat.Plain;

    /// <summary>Special tokens that end an assistant turn; the caller maps them to ids and stops on them.</summary>
    public IReadOnlyList<string> EndOfTurnTokens => Format switch
    {
        ChatFormat.Llama3 => ["<|eot_id|>"],
        ChatFormat.ChatML => ["<|im_end|>"],
        ChatFormat.Inst when _eos.Length > 0 => [_eos],
        // Huginn's generate stops on <|begin_text|>, <|end_text|> and <|end_turn|> (raven_modeling_minimal.py, _get_stops).
        ChatFormat.Huginn => ["<|end_turn|>", "<|end_text|>", "<|begin_text|>"],
        _ => [],
    };

    /// <summary>Text that ends an assistant turn when no special token does: a base model goes on to write the next user line.</summary>
    public IReadOnlyList<string> StopStrings => Format == ChatFormat.Plain ? ["\nUser:"] : [];

    public static ChatTemplate Plain { get; } = new(ChatFormat.Plain, null, null);

    /// <summary>A template of a given family, for <c>--chat-template</c>: plain, llama3, llama3.1, chatml, llama2, mistral, huginn.</summary>
    public static ChatTemplate Named(string name, string? bosToken, string? eosToken) => name.ToLowerInvariant() switch
    {
        "plain" => Plain,
        "llama3" => new(ChatFormat.Llama3, bosToken, eosToken),
        "llama3.1" => new(ChatFormat.Llama3, bosToken, eosToken, dateString: "26 Jul 2024"),
        "chatml" => new(ChatFormat.ChatML, bosToken, eosToken),
        "llama2" => new(ChatFormat.Inst, bosToken, eosToken, instSystemBlock: true),
        "mistral" => new(ChatFormat.Inst, bosToken, eosToken, instSystemBlock: false),
        "huginn" => new(ChatFormat.Huginn, bosToken, eosToken),
        _ => throw RecurUserException.About($"ChatTemplate must be auto, plain, llama3, llama3.1, chatml, llama2, mistral or huginn (got '{name}')", "ChatTemplate"),
    };

    /// <summary>
    /// Recognises a Jinja <c>chat_template</c> by its markers: Llama 3 (<c>&lt;|start_header_id|&gt;</c> and
    /// <c>&lt;|eot_id|&gt;</c>; with "Cutting Knowledge Date" it is the 3.1+ variant), ChatML
    /// (<c>&lt;|im_start|&gt;</c> and <c>&lt;|im_end|&gt;</c>), <c>[INST]</c>/<c>[/INST]</c> (Llama 2 when it has a
    /// <c>&lt;&lt;SYS&gt;&gt;</c> block, Mistral otherwise), Huginn (<c>&lt;|begin_header|&gt;</c> and <c>&lt;|end_turn|&gt;</c>). No template, or an unrecognised one, gives
    /// <see cref="Plain"/>; <paramref name="notice"/> says why.
    /// </summary>
    public static ChatTemplate Detect(string? jinja, string? bosToken, string? eosToken, DateTime? today = null, Action<string>? notice = null)
    {
        if (string.IsNullOrWhiteSpace(jinja)) return Plain;
        if (jinja.Contains("<|start_header_id|>") && jinja.Contains("<|eot_id|>"))
        {
            string? date = null;
            if (jinja.Contains("Cutting Knowledge Date"))
                date = jinja.Contains("strftime_now")
                    ? (today ?? DateTime.Now).ToString("dd MMM yyyy", CultureInfo.InvariantCulture)
                    : FixedDate(jinja) ?? "26 Jul 2024";
            return new(ChatFormat.Llama3, bosToken, eosToken, dateString: date);
        }
        if (jinja.Contains("<|im_start|>") && jinja.Contains("<|im_end|>"))
            return new(ChatFormat.ChatML, bosToken, eosToken, defaultSystem: DefaultChatMLSystem(jinja));
        if (jinja.Contains("[INST]") && jinja.Contains("[/INST]"))
            return new(ChatFormat.Inst, bosToken, eosToken, instSystemBlock: jinja.Contains("<<SYS>>"));
        if (jinja.Contains("<|begin_header|>") && jinja.Contains("<|end_turn|>"))
            // The released template (written by seal-rg/recurrent-pretraining's evaluate_raven/checkpoint_to_hf_converter.py)
            // names assistant turns "Huginn" and closes a conversation without a generation prompt with <|end_text|>; an
            // earlier one (scripts/scalable_data_download.py, commented out) writes every role verbatim and closes with nothing.
            return new(ChatFormat.Huginn, bosToken, eosToken,
                huginnAssistantAlias: HuginnAlias.IsMatch(jinja), huginnEndText: jinja.Contains("'<|end_text|>'"));
        notice?.Invoke("the tokenizer's chat_template is not one Recur recognises (Llama 3, ChatML, [INST], Huginn); using the plain 'User: …\\nAssistant:' format");
        return Plain;
    }

    static readonly Regex HuginnAlias = new(@"==\s*[""']assistant[""']", RegexOptions.Compiled);
    static readonly Regex DateLiteral = new("""set date_string = ["']([^"']+)["']""", RegexOptions.Compiled);
    static string? FixedDate(string jinja) => DateLiteral.Match(jinja) is { Success: true } m ? m.Groups[1].Value : null;

    // Qwen-style templates write a literal default system turn when messages[0] is not a system message:
    // '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n'. Quotes and braces are excluded so the
    // match cannot run across Jinja code.
    static readonly Regex ChatMLDefaultSystem = new(@"<\|im_start\|>system(?:\\n|\n)([^'""{}<>]+?)<\|im_end\|>", RegexOptions.Compiled);
    static string? DefaultChatMLSystem(string jinja) =>
        ChatMLDefaultSystem.Match(jinja) is { Success: true } m ? m.Groups[1].Value.Replace("\\n", "\n") : null;

    /// <summary>
    /// The prompt text for <paramref name="messages"/>, ending with the opening of the assistant's turn
    /// when <paramref name="addGenerationPrompt"/>. Throws <see cref="RecurUserException"/> for roles other
    /// than system/user/assistant, and for [INST] templates when turns do not alternate user/assistant.
    /// </summary>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        foreach (var m in messages)
            if (m.Role is not ("system" or "user" or "assistant"))
                throw new RecurUserException($"message role '{m.Role}' is not supported; expected system, user or assistant");
        var sb = new StringBuilder();
        switch (Format)
        {
            case ChatFormat.Llama3: RenderLlama3(sb, messages, addGenerationPrompt); break;
            case ChatFormat.ChatML: RenderChatML(sb, messages, addGenerationPrompt); break;
            case ChatFormat.Inst: RenderInst(sb, messages); break;
            case ChatFormat.Huginn: RenderHuginn(sb, messages, addGenerationPrompt); break;
            default: RenderPlain(sb, messages, addGenerationPrompt); break;
        }
        return sb.ToString();
    }

    void RenderLlama3(StringBuilder sb, IReadOnlyList<ChatMessage> messages, bool gen)
    {
        sb.Append(_bos);
        int start = 0;
        if (_dateString is not null)
        {
            string system = messages.Count > 0 && messages[0].Role == "system" ? messages[0].Content.Trim() : "";
            if (messages.Count > 0 && messages[0].Role == "system") start = 1;
            Header(sb, "system").Append(CuttingKnowledge).Append("Today Date: ").Append(_dateString).Append("\n\n").Append(system).Append("<|eot_id|>");
        }
        for (int i = start; i < messages.Count; i++)
            Header(sb, messages[i].Role).Append(messages[i].Content.Trim()).Append("<|eot_id|>");
        if (gen) Header(sb, "assistant");

        static StringBuilder Header(StringBuilder sb, string role) => sb.Append("<|start_header_id|>").Append(role).Append("<|end_header_id|>\n\n");
    }

    void RenderChatML(StringBuilder sb, IReadOnlyList<ChatMessage> messages, bool gen)
    {
        if (_defaultSystem is not null && (messages.Count == 0 || messages[0].Role != "system"))
            sb.Append("<|im_start|>system\n").Append(_defaultSystem).Append("<|im_end|>\n");
        foreach (var m in messages)
            sb.Append("<|im_start|>").Append(m.Role).Append('\n').Append(m.Content).Append("<|im_end|>\n");
        if (gen) sb.Append("<|im_start|>assistant\n");
    }

    void RenderInst(StringBuilder sb, IReadOnlyList<ChatMessage> messages)
    {
        string? system = messages.Count > 0 && messages[0].Role == "system" ? messages[0].Content : null;
        var turns = messages.Skip(system is null ? 0 : 1).ToList();
        for (int i = 0; i < turns.Count; i++)
            if ((turns[i].Role == "user") != (i % 2 == 0))
                throw new RecurUserException($"the {Name} chat template needs messages that alternate user/assistant after an optional first system message (message {i + (system is null ? 0 : 1)} is '{turns[i].Role}')");
        if (!_instSystemBlock) sb.Append(_bos);
        for (int i = 0; i < turns.Count; i++)
        {
            string content = turns[i].Content;
            if (turns[i].Role == "user")
            {
                if (i == 0 && system is not null)
                    content = _instSystemBlock ? $"<<SYS>>\n{system}\n<</SYS>>\n\n{content}" : $"{system}\n\n{content}";
                // Llama 2 opens every user turn with BOS; Mistral only the conversation.
                if (_instSystemBlock) sb.Append(_bos);
                sb.Append("[INST] ").Append(_instSystemBlock ? content.Trim() : content).Append(" [/INST]");
            }
            else if (_instSystemBlock) sb.Append(' ').Append(content.Trim()).Append(' ').Append(_eos);
            else sb.Append(content).Append(_eos);
        }
    }

    // Huginn-0125's tokenizer_config.json: BOS before the first header; each message is a header with its role (assistant
    // turns as "Huginn"), a blank line, the trimmed content and <|end_turn|>; then the Huginn header, or <|end_text|>.
    void RenderHuginn(StringBuilder sb, IReadOnlyList<ChatMessage> messages, bool gen)
    {
        for (int i = 0; i < messages.Count; i++)
        {
            if (i == 0) sb.Append(_bos);
            string role = _huginnAssistantAlias && messages[i].Role == "assistant" ? "Huginn" : messages[i].Role;
            sb.Append("<|begin_header|>").Append(role).Append("<|end_header|>\n\n").Append(messages[i].Content.Trim()).Append("<|end_turn|>");
        }
        if (gen) sb.Append("<|begin_header|>Huginn<|end_header|>\n\n");
        else if (_huginnEndText) sb.Append("<|end_text|>");
    }

    static void RenderPlain(StringBuilder sb, IReadOnlyList<ChatMessage> messages, bool gen)
    {
        for (int i = 0; i < messages.Count; i++)
        {
            var m = messages[i];
            if (m.Role == "system")
                sb.Append(i == 0 ? $"{m.Content.Trim()}\n\n" : $"System: {m.Content.Trim()}\n");
            else
                sb.Append(m.Role == "user" ? "User: " : "Assistant: ").Append(m.Content.Trim()).Append('\n');
        }
        if (gen) sb.Append("Assistant:");
    }
}
