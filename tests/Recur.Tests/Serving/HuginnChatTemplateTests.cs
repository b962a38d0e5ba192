using System.Text.Json;
using Recur.Engine;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Serving;

/// <summary>
/// Huginn-0125's chat layout against an independent Jinja2 rendering (tests/reference/huginn_chat_template.py, which
/// renders as transformers' apply_chat_template does and was checked there against the released template's text).
/// </summary>
public sealed class HuginnChatTemplateTests
{
    static JsonElement Fixture()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "chat", "huginn-template.json")));
        return doc.RootElement.Clone();
    }

    [Theory]
    [InlineData("huginn")]
    [InlineData("huginn_verbatim")]
    public void Huginn_templates_render_exactly_as_jinja_does(string which)
    {
        var f = Fixture();
        string bos = f.GetProperty("bos_token").GetString()!, eos = f.GetProperty("eos_token").GetString()!;
        var t = ChatTemplate.Detect(f.GetProperty("templates").GetProperty(which).GetString(), bos, eos);
        Assert.Equal(("huginn", false), (t.Name, t.AddSpecialTokens));
        int n = 0;
        foreach (var c in f.GetProperty("cases").EnumerateArray())
        {
            var messages = c.GetProperty("messages").EnumerateArray()
                .Select(m => new ChatMessage(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToList();
            bool gen = c.GetProperty("add_generation_prompt").GetBoolean();
            Assert.Equal(c.GetProperty(which).GetString(), t.Render(messages, gen));
            n++;
        }
        Assert.Equal(10, n);
    }

    [Fact]
    public void Huginn_turns_end_at_its_stop_tokens_and_the_family_can_be_forced()
    {
        var t = ChatTemplate.Named("huginn", "<|begin_text|>", "<|end_text|>");
        Assert.Equal(["<|end_turn|>", "<|end_text|>", "<|begin_text|>"], t.EndOfTurnTokens);
        Assert.Equal("<|begin_text|><|begin_header|>user<|end_header|>\n\nHi<|end_turn|><|begin_header|>Huginn<|end_header|>\n\n",
            t.Render([ChatMessage.User(" Hi ")]));
    }
}
