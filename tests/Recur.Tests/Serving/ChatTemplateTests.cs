using Recur.Engine;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;

namespace Recur.Tests.Serving;

/// <summary>
/// Chat prompt rendering, history and command parsing. Expected strings are written out by hand from the
/// layouts of the Hugging Face templates each family is recognised by (docs/serving.md, "Chat templates").
/// </summary>
public sealed class ChatTemplateTests
{
    static readonly ChatMessage[] Conversation =
    [
        ChatMessage.System("Be brief."), ChatMessage.User(" Hi "), ChatMessage.Assistant("Hello!"), ChatMessage.User("2+2?"),
    ];

    // Marker-bearing stand-ins for real templates: detection only looks at the markers.
    const string Llama3Jinja = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content|trim }}<|eot_id|>{% endfor %}";
    const string Llama31Jinja = Llama3Jinja + "{%- set date_string = \"26 Jul 2024\" %}{{- \"Cutting Knowledge Date: December 2023\\n\" }}";
    const string Llama32Jinja = Llama31Jinja + "{%- set date_string = strftime_now(\"%d %b %Y\") %}";

    [Fact]
    public void Llama3_template_renders_headers_with_trimmed_content_and_one_bos()
    {
        var t = ChatTemplate.Detect(Llama3Jinja, "<|begin_of_text|>", "<|end_of_text|>");
        Assert.Equal(("llama3", false), (t.Name, t.AddSpecialTokens));
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            t.Render(Conversation));
        Assert.Equal(["<|eot_id|>"], t.EndOfTurnTokens);
    }

    [Fact]
    public void Llama31_template_always_opens_with_the_dated_system_header()
    {
        var t = ChatTemplate.Detect(Llama31Jinja, "<|begin_of_text|>", "<|end_of_text|>");
        Assert.Equal("llama3.1", t.Name);
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            t.Render([ChatMessage.User("Hi")]));
        Assert.StartsWith(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user",
            t.Render(Conversation));
        // Llama 3.2's template asks for today's date.
        var today = ChatTemplate.Detect(Llama32Jinja, "<|begin_of_text|>", null, today: new DateTime(2025, 3, 5));
        Assert.Contains("Today Date: 05 Mar 2025\n\n", today.Render([ChatMessage.User("Hi")]));
    }

    [Fact]
    public void ChatML_template_renders_turns_and_a_default_system_message_when_the_template_has_one()
    {
        var t = ChatTemplate.Detect(ChatModels.ChatMLTemplate, null, "<|im_end|>");
        Assert.Equal("chatml", t.Name);
        Assert.Equal(
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
            t.Render([ChatMessage.User("Hi"), ChatMessage.Assistant("Hello!"), ChatMessage.User("Bye")]));

        const string qwenLike = "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}" +
            "{%- for m in messages %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor %}";
        var q = ChatTemplate.Detect(qwenLike, null, null);
        Assert.Equal("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            q.Render([ChatMessage.User("Hi")]));
        Assert.StartsWith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>", q.Render(Conversation));
    }

    [Fact]
    public void Inst_templates_render_llama2_sys_blocks_and_mistral_turns()
    {
        var llama2 = ChatTemplate.Detect("{% if x %}<<SYS>>{% endif %}{{ bos_token + '[INST] ' + c + ' [/INST]' }}", "<s>", "</s>");
        Assert.Equal("llama2", llama2.Name);
        Assert.Equal("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello! </s><s>[INST] 2+2? [/INST]", llama2.Render(Conversation));

        var mistral = ChatTemplate.Detect("{{ bos_token }}{{ '[INST] ' + c + ' [/INST]' }}", "<s>", "</s>");
        Assert.Equal("mistral", mistral.Name);
        Assert.Equal("<s>[INST] Be brief.\n\n Hi  [/INST]Hello!</s>[INST] 2+2? [/INST]", mistral.Render(Conversation));
        Assert.Equal(["</s>"], mistral.EndOfTurnTokens);

        var e = Assert.Throws<RecurUserException>(() => llama2.Render([ChatMessage.User("a"), ChatMessage.User("b")]));
        Assert.Contains("alternate", e.Message);
    }

    [Fact]
    public void No_or_unknown_template_falls_back_to_plain_with_a_notice()
    {
        Assert.Same(ChatTemplate.Plain, ChatTemplate.Detect(null, "<s>", "</s>"));
        string? notice = null;
        var t = ChatTemplate.Detect("{{ messages | join('\\n') }}", "<s>", "</s>", notice: s => notice = s);
        Assert.Equal(ChatFormat.Plain, t.Format);
        Assert.Contains("not one Recur recognises", notice);
        Assert.True(t.AddSpecialTokens);
        Assert.Equal("Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant:", t.Render(Conversation));
        Assert.Equal(["\nUser:"], t.StopStrings);
        Assert.Throws<RecurUserException>(() => t.Render([new ChatMessage("tool", "x")]));
    }

    [Fact]
    public void Named_templates_cover_every_family_and_reject_unknown_names()
    {
        foreach (var name in new[] { "plain", "llama3", "llama3.1", "chatml", "llama2", "mistral" })
            Assert.Equal(name, ChatTemplate.Named(name, "<s>", "</s>").Name);
        Assert.Contains("ChatTemplate must be", Assert.Throws<RecurUserException>(() => ChatTemplate.Named("jinja", null, null)).Message);
    }

    [Fact]
    public void Chat_template_is_read_from_jinja_file_before_tokenizer_config_and_named_lists_pick_default()
    {
        string dir = TestModels.TempDir("recur-chat-tpl");
        string tok = Path.Combine(dir, "tokenizer.json");
        Assert.Null(ChatTemplateFile.Read(tok));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            """{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}""");
        Assert.Equal("D", ChatTemplateFile.Read(tok));
        File.WriteAllText(Path.Combine(dir, "chat_template.jinja"), "J");
        Assert.Equal("J", ChatTemplateFile.Read(tok));
        File.Delete(Path.Combine(dir, "chat_template.jinja"));
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"chat_template": 3}""");
        Assert.Contains("tokenizer_config.json", Assert.Throws<RecurUserException>(() => ChatTemplateFile.Read(tok)).Message);
    }

    [SharedFact("tokenizers", "llama3")]
    public void Shared_llama3_tokenizer_template_is_recognised_and_encodes_with_a_single_bos()
    {
        using var tok = TokenizerLoader.Load(SharedAssets.Path("tokenizers", "llama3"));
        var t = ChatTemplate.Detect(ChatTemplateFile.Read(tok.SourcePath), tok.IdToToken(tok.BosId!.Value), tok.IdToToken(tok.EosId!.Value));
        Assert.Equal("llama3", t.Name);
        var ids = tok.Encode(t.Render([ChatMessage.User("Hello")]), t.AddSpecialTokens);
        int bos = tok.TokenToId("<|begin_of_text|>")!.Value, header = tok.TokenToId("<|start_header_id|>")!.Value, eot = tok.TokenToId("<|eot_id|>")!.Value;
        Assert.Equal(bos, ids[0]);
        Assert.Single(ids, bos);
        Assert.Equal(header, ids[1]);
        Assert.Equal(2, ids.Count(i => i == header));
        Assert.Single(ids, eot);
        Assert.Contains(eot, tok.StopIds);
    }

    [Fact]
    public void Session_drops_oldest_exchanges_to_fit_and_keeps_the_system_message()
    {
        var s = new ChatSession(ChatTemplate.Plain, "sys");
        static int[] Words(string text, bool _) => [.. text.Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Select(w => w.Length)];
        s.AddUser("one two three");
        s.AddAssistant("four five");
        s.AddUser("six");
        s.AddAssistant("seven");
        s.AddUser("eight nine");
        var (all, none) = s.BuildPrompt(Words, 100);
        Assert.Equal(0, none);
        Assert.Equal(5, s.Turns.Count);
        // "sys User: one two three Assistant: four five User: six Assistant: seven User: eight nine Assistant:" = 16 words.
        Assert.Equal(16, all.Length);
        var (ids, dropped) = s.BuildPrompt(Words, 12);
        Assert.Equal(2, dropped);
        Assert.Equal(["six", "seven", "eight nine"], s.Turns.Select(m => m.Content));
        Assert.Equal(9, ids.Length); // sys User: six Assistant: seven User: eight nine Assistant:
        Assert.Equal("sys", s.Messages[0].Content);

        var e = Assert.Throws<RecurUserException>(() => s.BuildPrompt(Words, 3));
        Assert.Contains("too long", e.Message);
        Assert.Equal("eight nine", s.Turns[^1].Content);
        s.DropPendingUser();
        Assert.Empty(s.Turns);
        s.AddUser("x");
        s.Reset();
        Assert.Empty(s.Turns);
        Assert.Single(s.Messages);
    }

    [Theory]
    [InlineData("hello there", "Message:hello there")]
    [InlineData("  /exit ", "Exit")]
    [InlineData("/quit", "Exit")]
    [InlineData("/reset", "Reset")]
    [InlineData("/help", "Help")]
    [InlineData("/recurrences 8", "Recurrences:8")]
    [InlineData("/recurrences", "Recurrences:")]
    [InlineData("/recurrences 0", "Invalid")]
    [InlineData("/recurrences eight", "Invalid")]
    [InlineData("/frobnicate", "Invalid")]
    [InlineData("/exit now", "Invalid")]
    [InlineData("//etc/hosts", "Message:/etc/hosts")]
    [InlineData("   ", "Empty")]
    public void Chat_input_lines_parse_to_commands_or_messages(string line, string expected)
    {
        string actual = ChatInput.Parse(line) switch
        {
            ChatInput.Message m => $"Message:{m.Text}",
            ChatInput.Recurrences r => $"Recurrences:{r.Value}",
            ChatInput.Invalid => "Invalid",
            var other => other.GetType().Name,
        };
        Assert.Equal(expected, actual);
        Assert.IsType<ChatInput.Exit>(ChatInput.Parse(null));
    }

    [Fact]
    public void Stop_strings_hold_back_possible_prefixes_and_cut_at_the_earliest_stop()
    {
        var m = new StopStringMatcher(["\nUser:", "END"]);
        Assert.Equal("Hel", m.Push("Hel"));
        Assert.Equal("lo", m.Push("lo\nUs"));   // "\nUs" may start "\nUser:"
        Assert.Equal("", m.Push("er: more"));
        Assert.True(m.Stopped);
        Assert.Equal("\nUser:", m.Matched);
        Assert.Equal("", m.Push("anything"));
        Assert.Equal("", m.Flush());

        var n = new StopStringMatcher(["END", "ND!"]);
        Assert.Equal("a\nb", n.Push("a\nb") + n.Push("E"));
        Assert.Equal("", n.Push("N"));
        Assert.Equal("", n.Push("D!"));
        Assert.Equal("END", n.Matched); // "END" starts before "ND!"

        var open = new StopStringMatcher(["\nUser:"]);
        Assert.Equal("x", open.Push("x\nUse"));
        Assert.Equal("\nUse", open.Flush()); // generation ended without the stop: nothing is lost
        Assert.Equal("abc", new StopStringMatcher([]).Push("abc"));
    }
}
