using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Serving;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Serving;

/// <summary>
/// What every OpenAI client can use: T through the model id (<c>tiny@T=8</c>) or a header as well as the body field,
/// one rule for request fields Recur does not implement, and reply text that starts where it should.
/// </summary>
public sealed class OpenAiClientTests
{
    static async Task<(HttpStatusCode Status, JsonNode? Body)> Post(ServerLimitTests.Served s, string path, string json, int? headerT = null, string? header = null)
    {
        using var msg = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (headerT is not null || header is not null) msg.Headers.Add(OpenAiServer.RecurrencesHeader, header ?? headerT!.Value.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var res = await s.Http.SendAsync(msg);
        string text = await res.Content.ReadAsStringAsync();
        return (res.StatusCode, text.Length > 0 ? JsonNode.Parse(text) : null);
    }

    [Fact]
    public async Task T_comes_from_the_body_then_the_header_then_the_model_suffix()
    {
        using var s = ServerLimitTests.Serve(modelDir: ChatModels.Recurrent());
        using var list = await s.Http.GetAsync("/v1/models");
        var ids = JsonNode.Parse(await list.Content.ReadAsStringAsync())!["data"]!.AsArray().Select(m => (string)m!["id"]!).ToList();
        Assert.Equal(["tiny", "tiny@T=1", "tiny@T=2", "tiny@T=4", "tiny@T=8", "tiny@T=16", "tiny@T=32", "tiny@T=64", "tiny@T=128", "tiny@T=256"], ids);
        using var one = await s.Http.GetAsync("/v1/models/tiny@T=12");
        Assert.Equal(HttpStatusCode.OK, one.StatusCode);
        Assert.Equal(12, (int)JsonNode.Parse(await one.Content.ReadAsStringAsync())!["recurrences"]!);
        Assert.Equal(HttpStatusCode.BadRequest, (await s.Http.GetAsync("/v1/models/tiny@T=0")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await s.Http.GetAsync("/v1/models/other@T=2")).StatusCode);

        const string ask = "\"prompt\": \"the cat\", \"max_tokens\": 6, \"temperature\": 1, \"seed\": 3";
        async Task<(int T, string Text, string Model)> Run(string json, int? header = null)
        {
            var (status, body) = await Post(s, "/v1/completions", json, header);
            Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
            return ((int)body!["recurrences"]!, (string)body["choices"]![0]!["text"]!, (string)body["model"]!);
        }
        var byField = await Run($"{{{ask}, \"recurrences\": 2}}");
        var bySuffix = await Run($"{{{ask}, \"model\": \"tiny@T=2\"}}");
        var byHeader = await Run($"{{{ask}}}", header: 2);
        Assert.Equal((2, byField.Text), (bySuffix.T, bySuffix.Text));
        Assert.Equal((2, byField.Text), (byHeader.T, byHeader.Text));
        Assert.Equal("tiny@T=2", bySuffix.Model);

        Assert.Equal(3, (await Run($"{{{ask}, \"model\": \"tiny@T=2\"}}", header: 3)).T);
        Assert.Equal(5, (await Run($"{{{ask}, \"model\": \"tiny@T=2\", \"recurrences\": 5}}", header: 3)).T);
        Assert.Equal(4, (await Run($"{{{ask}}}")).T);

        // Chat takes the same three.
        var (chatStatus, chat) = await Post(s, "/v1/chat/completions", """{"model": "tiny@T=8", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}""");
        Assert.Equal(HttpStatusCode.OK, chatStatus);
        Assert.Equal(8, (int)chat!["recurrences"]!);

        var (bad, badBody) = await Post(s, "/v1/completions", $"{{{ask}}}", header: "eight");
        Assert.Equal(HttpStatusCode.BadRequest, bad);
        Assert.Equal(OpenAiServer.RecurrencesHeader, (string?)badBody!["error"]!["param"]);
        var (bad2, bad2Body) = await Post(s, "/v1/completions", $"{{{ask}, \"model\": \"tiny@T=9999\"}}");
        Assert.Equal(HttpStatusCode.BadRequest, bad2);
        Assert.Equal("model", (string?)bad2Body!["error"]!["param"]);
    }

    [Fact]
    public async Task A_plain_model_refuses_T_from_every_source()
    {
        using var s = ServerLimitTests.Serve();
        using var list = await s.Http.GetAsync("/v1/models");
        Assert.Single(JsonNode.Parse(await list.Content.ReadAsStringAsync())!["data"]!.AsArray());
        Assert.Equal("model", (string?)(await Post(s, "/v1/completions", """{"prompt": "a", "model": "tiny@T=2"}""")).Body!["error"]!["param"]);
        Assert.Equal(OpenAiServer.RecurrencesHeader, (string?)(await Post(s, "/v1/completions", """{"prompt": "a"}""", headerT: 2)).Body!["error"]!["param"]);
        Assert.Equal("recurrences", (string?)(await Post(s, "/v1/completions", """{"prompt": "a", "recurrences": 2}""")).Body!["error"]!["param"]);
    }

    [Fact]
    public async Task Every_unimplemented_field_is_refused_by_name_unless_it_asks_for_nothing()
    {
        using var s = ServerLimitTests.Serve();
        const string msgs = "\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 2";
        // Neutral values and bookkeeping fields, as SDKs send them: accepted.
        // Extra fields written with ' for ".
        static string With(string extra) => "{" + msgs + ", " + extra.Replace('\'', '"') + "}";
        var (ok, okBody) = await Post(s, "/v1/chat/completions", With(
            "'tools': [], 'tool_choice': 'none', 'parallel_tool_calls': true, 'response_format': {'type': 'text'}, " +
            "'presence_penalty': 0, 'frequency_penalty': 0, 'logit_bias': {}, 'user': 'u', 'metadata': {'a': 'b'}, 'store': false, 'logprobs': false, 'n': 1, " +
            "'modalities': ['text'], 'service_tier': 'auto', 'audio': null, 'stream_options': null"));
        Assert.True(ok == HttpStatusCode.OK, okBody?.ToJsonString());
        var (ok2, ok2Body) = await Post(s, "/v1/completions", """{"prompt": "a", "max_tokens": 1, "suffix": "", "best_of": 1, "echo": false, "logprobs": null, "user": "u"}""");
        Assert.True(ok2 == HttpStatusCode.OK, ok2Body?.ToJsonString());

        async Task Refused(string path, string json, string param, string code)
        {
            var (status, body) = await Post(s, path, json);
            Assert.True(status == HttpStatusCode.BadRequest, $"{json}: {status} {body?.ToJsonString()}");
            Assert.Equal(param, (string?)body!["error"]!["param"]);
            Assert.Equal(code, (string?)body["error"]!["code"]);
            Assert.Contains(param, (string?)body["error"]!["message"]);
        }
        const string chat = "/v1/chat/completions", completions = "/v1/completions";
        await Refused(chat, With("'tools': [{'type': 'function', 'function': {'name': 'f'}}]"), "tools", "unsupported_parameter");
        await Refused(chat, With("'tool_choice': 'required'"), "tool_choice", "unsupported_parameter");
        await Refused(chat, With("'response_format': {'type': 'json_object'}"), "response_format", "unsupported_parameter");
        await Refused(chat, With("'logit_bias': {'5': 10}"), "logit_bias", "unsupported_parameter");
        await Refused(chat, With("'presence_penalty': 0.5"), "presence_penalty", "unsupported_parameter");
        await Refused(chat, With("'reasoning_effort': 'low'"), "reasoning_effort", "unsupported_parameter");
        await Refused(chat, With("'audio': {'voice': 'alloy'}"), "audio", "unsupported_parameter");
        await Refused(chat, With("'recurrence': 4"), "recurrence", "unknown_parameter");
        await Refused(chat, With("'echo': true"), "echo", "unknown_parameter");
        await Refused(completions, """{"prompt": "a", "suffix": "b"}""", "suffix", "unsupported_parameter");
        await Refused(completions, """{"prompt": "a", "best_of": 3}""", "best_of", "unsupported_parameter");
        await Refused(completions, """{"prompt": "a", "repetition_penalty": 1.1}""", "repetition_penalty", "unknown_parameter");
        await Refused(completions, """{"prompt": "a", "messages": []}""", "messages", "unknown_parameter");
        await Refused(completions, """{"prompt": "a", "stream": true, "logprobs": 1}""", "stream", "unsupported_parameter");
    }

    /// <summary>
    /// A copy of the tiny plain model whose tokenizer writes every word with a leading-space marker: SentencePiece's
    /// "▁" (Metaspace-style normaliser, decoder with transformers' Strip step) or byte-level BPE's "Ġ".
    /// </summary>
    static string SpaceMarkedModel(bool sentencePiece)
    {
        string dir = ChatModels.Plain();
        var vocab = ChatModels.Vocab().ToDictionary(kv => kv.Value < 5 ? kv.Key : (sentencePiece ? "▁" : "Ġ") + kv.Key, kv => kv.Value);
        var added = vocab.Where(kv => kv.Value < 5).Select(kv => new Dictionary<string, object>
        {
            ["id"] = kv.Value, ["content"] = kv.Key, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        });
        object? normalizer = sentencePiece
            ? new { type = "Sequence", normalizers = new object[] { new { type = "Prepend", prepend = "▁" }, new { type = "Replace", pattern = new { String = " " }, content = "▁" } } }
            : null;
        object preTokenizer = sentencePiece
            ? new { type = "Split", pattern = new { String = "▁" }, behavior = "MergedWithNext", invert = false }
            : new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true };
        object decoder = sentencePiece
            ? new { type = "Sequence", decoders = new object[] { new { type = "Replace", pattern = new { String = "▁" }, content = " " }, new { type = "Fuse" }, new { type = "Strip", content = " ", start = 1, stop = 0 } } }
            : new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true };
        var json = new Dictionary<string, object?>
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added,
            ["normalizer"] = normalizer, ["pre_tokenizer"] = preTokenizer, ["post_processor"] = null, ["decoder"] = decoder,
            ["model"] = new Dictionary<string, object> { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = "<unk>" },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(json));
        return dir;
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Chat_replies_start_without_a_space_and_completions_continue_the_prompt_with_one(bool sentencePiece)
    {
        // sleepMs 1: the slowed model never picks the special ids 0–4, so every reply has words.
        using var s = ServerLimitTests.Serve(sleepMs: 1, modelDir: SpaceMarkedModel(sentencePiece));
        // The SentencePiece-style decoder drops the space of a text's first piece; the byte-level one keeps it.
        Assert.Equal(sentencePiece ? "the cat" : " the cat", s.Tokenizer.Decode(s.Tokenizer.Encode("the cat", addSpecialTokens: false)));
        Assert.Equal(sentencePiece ? "cat" : " cat", s.Tokenizer.Decode([s.Tokenizer.Encode("cat", addSpecialTokens: false)[0]]));

        const string chat = """{"messages": [{"role": "user", "content": "the cat"}], "max_tokens": 4, "temperature": 0}""";
        var (status, body) = await Post(s, "/v1/chat/completions", chat);
        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
        string reply = (string)body!["choices"]![0]!["message"]!["content"]!;
        Assert.True(reply.Length > 0 && reply[0] != ' ', $"chat reply '{reply}'");
        // Streamed the same.
        using (var content = new StringContent(chat[..^1] + ", \"stream\": true}", Encoding.UTF8, "application/json"))
        using (var res = await s.Http.PostAsync("/v1/chat/completions", content))
        {
            string events = await res.Content.ReadAsStringAsync();
            string streamed = string.Concat(events.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).Where(e => e != "[DONE]")
                .Select(e => (string?)JsonNode.Parse(e)!["choices"]![0]!["delta"]!["content"] ?? ""));
            Assert.Equal(reply, streamed);
        }

        // A completion is the text that follows the prompt: prompt + text reads as one decoded text.
        var prompt = s.Tokenizer.Encode("the cat sat", addSpecialTokens: false);
        var (cs, cb) = await Post(s, "/v1/completions", $$"""{"prompt": [{{string.Join(',', prompt)}}], "max_tokens": 3, "temperature": 0, "logprobs": 0}""");
        Assert.True(cs == HttpStatusCode.OK, cb?.ToJsonString());
        string text = (string)cb!["choices"]![0]!["text"]!;
        Assert.StartsWith(" ", text);
        Assert.Equal(text, string.Concat(cb["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Select(x => (string)x!)));
    }
}
