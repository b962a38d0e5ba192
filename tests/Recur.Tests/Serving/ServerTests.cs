using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Serving;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Serving;

/// <summary>
/// The OpenAI-compatible server on 127.0.0.1 (a free port) with a tiny random model, driven by HttpClient.
/// Each test starts its own server and stops it at the end.
/// </summary>
public sealed class ServerTests
{
    sealed class Running : IDisposable
    {
        public required ICausalLM Model { get; init; }
        public required ITokenizer Tokenizer { get; init; }
        public required ModelRunner Runner { get; init; }
        public required OpenAiServer Server { get; init; }
        public required HttpClient Http { get; init; }
        public List<string> Log { get; } = [];

        public void Dispose()
        {
            Http.Dispose();
            Server.Dispose();
            Model.Dispose();
            Tokenizer.Dispose();
        }

        public async Task<(HttpStatusCode Status, JsonNode Body)> Post(string path, string json)
        {
            using var content = new StringContent(json, Encoding.UTF8, "application/json");
            using var res = await Http.PostAsync(path, content);
            string text = await res.Content.ReadAsStringAsync();
            return (res.StatusCode, JsonNode.Parse(text)!);
        }

        public async Task<(HttpStatusCode Status, JsonNode Body)> Get(string path)
        {
            using var res = await Http.GetAsync(path);
            return (res.StatusCode, JsonNode.Parse(await res.Content.ReadAsStringAsync())!);
        }

        /// <summary>The data payloads of an event stream, in order (the last is "[DONE]").</summary>
        public async Task<(HttpStatusCode Status, string ContentType, List<string> Events)> Stream(string path, string json)
        {
            using var content = new StringContent(json, Encoding.UTF8, "application/json");
            using var res = await Http.PostAsync(path, content);
            string text = await res.Content.ReadAsStringAsync();
            var events = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
                .Select(e => e.StartsWith("data: ", StringComparison.Ordinal) ? e["data: ".Length..] : throw new Xunit.Sdk.XunitException($"not an SSE data line: {e}"))
                .ToList();
            return (res.StatusCode, res.Content.Headers.ContentType?.MediaType ?? "", events);
        }
    }

    static Running Start(string modelDir, int maxBatch = 4, string name = "tiny")
    {
        var tok = TokenizerLoader.Load(modelDir);
        var model = ModelLoader.Load(modelDir, ScalarType.Float32, CPU);
        var runner = new ModelRunner(model, tok);
        var template = ChatTemplate.Detect(ChatTemplateFile.Read(tok.SourcePath), "<s>", "</s>");
        var log = new List<string>();
        var server = new OpenAiServer(runner, template, new ServerOptions
        {
            Port = 0, ModelName = name, MaxBatch = maxBatch, MaxRecurrences = 64,
            Log = s => { lock (log) log.Add(s); },
        });
        server.Start();
        Assert.Equal("127.0.0.1", server.BaseAddress.Host);
        var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };
        var r = new Running { Model = model, Tokenizer = tok, Runner = runner, Server = server, Http = http };
        return r;
    }

    static string Text(JsonNode body) => body["choices"]![0]!["text"]!.GetValue<string>();
    static string Content(JsonNode body) => body["choices"]![0]!["message"]!["content"]!.GetValue<string>();

    [Fact]
    public async Task Models_lists_the_served_model()
    {
        using var s = Start(ChatModels.Plain(), name: "my-model");
        var (status, body) = await s.Get("/v1/models");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("list", (string?)body["object"]);
        var card = body["data"]!.AsArray().Single()!;
        Assert.Equal("my-model", (string?)card["id"]);
        Assert.Equal("model", (string?)card["object"]);
        Assert.Equal(Presets.TinyTest.MaxPositionEmbeddings, (int)card["context_length"]!);
        Assert.Equal(HttpStatusCode.OK, (await s.Get("/v1/models/my-model")).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await s.Get("/v1/models/other")).Status);
    }

    [Fact]
    public async Task Completion_matches_direct_greedy_generation_and_counts_tokens()
    {
        using var s = Start(ChatModels.Plain());
        var (status, body) = await s.Post("/v1/completions", """{"model": "tiny", "prompt": "the cat sat on", "max_tokens": 6, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("text_completion", (string?)body["object"]);
        Assert.Equal("tiny", (string?)body["model"]);
        Assert.StartsWith("cmpl-", (string?)body["id"]);

        var ids = s.Tokenizer.Encode("the cat sat on");
        var stops = new HashSet<int>([.. s.Model.EosTokenIds, .. s.Tokenizer.StopIds]);
        var direct = Generation.Generate(s.Model, [ids], new GenerationOptions(6, new SamplingOptions(), stops))[0];
        // A completion is what the new tokens add to the prompt's text.
        Assert.Equal(s.Tokenizer.Decode([.. ids, .. direct])[s.Tokenizer.Decode(ids).Length..], Text(body));
        Assert.Equal(ids.Length, (int)body["usage"]!["prompt_tokens"]!);
        Assert.Equal(direct.Count, (int)body["usage"]!["completion_tokens"]!);
        Assert.Equal(ids.Length + direct.Count, (int)body["usage"]!["total_tokens"]!);
        Assert.Equal(direct.Count == 6 ? "length" : "stop", (string?)body["choices"]![0]!["finish_reason"]);

        // Token-id prompts are accepted too and give the same text.
        var (_, byIds) = await s.Post("/v1/completions", $$"""{"prompt": [{{string.Join(',', ids)}}], "max_tokens": 6, "temperature": 0}""");
        Assert.Equal(Text(body), Text(byIds));
    }

    [Fact]
    public async Task Chat_completion_renders_the_template_and_answers_as_assistant()
    {
        using var s = Start(ChatModels.Plain(ChatModels.ChatMLTemplate));
        var (status, body) = await s.Post("/v1/chat/completions",
            """{"model": "tiny", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hello world"}]}], "max_tokens": 5, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("chat.completion", (string?)body["object"]);
        Assert.Equal("assistant", (string?)body["choices"]![0]!["message"]!["role"]);
        string prompt = "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n";
        var ids = s.Tokenizer.Encode(prompt, addSpecialTokens: false);
        Assert.Equal(ids.Length, (int)body["usage"]!["prompt_tokens"]!);
        var expected = s.Runner.Run([new TextRequest(ids, 5, new SamplingOptions(), StopIds: [s.Tokenizer.TokenToId("<|im_end|>")!.Value])])[0];
        Assert.Equal(expected.Text, Content(body));
        Assert.Equal(expected.CompletionTokens, (int)body["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task Streamed_chunks_concatenate_to_the_non_streamed_text()
    {
        using var s = Start(ChatModels.Plain(ChatModels.ChatMLTemplate));
        const string prompt = "\"prompt\": \"a dog ran to the\", \"max_tokens\": 8, \"temperature\": 0";
        var (_, whole) = await s.Post("/v1/completions", $"{{{prompt}}}");
        var (status, type, events) = await s.Stream("/v1/completions", $"{{{prompt}, \"stream\": true, \"stream_options\": {{\"include_usage\": true}}}}");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("text/event-stream", type);
        Assert.Equal("[DONE]", events[^1]);
        var chunks = events.SkipLast(1).Select(e => JsonNode.Parse(e)!).ToList();
        Assert.All(chunks, c => Assert.Equal("text_completion", (string?)c["object"]));
        var withChoice = chunks.Where(c => c["choices"]!.AsArray().Count > 0).ToList();
        Assert.True(withChoice.Count >= 2, "expected text chunks and a final chunk");
        Assert.Equal(Text(whole), string.Concat(withChoice.Select(Text)));
        Assert.Equal((string?)whole["choices"]![0]!["finish_reason"], (string?)withChoice[^1]["choices"]![0]!["finish_reason"]);
        Assert.Equal((int)whole["usage"]!["completion_tokens"]!, (int)chunks[^1]["usage"]!["completion_tokens"]!);

        const string chat = "\"messages\": [{\"role\": \"user\", \"content\": \"the big red dog\"}], \"max_tokens\": 6, \"temperature\": 0";
        var (_, chatWhole) = await s.Post("/v1/chat/completions", $"{{{chat}}}");
        var (_, _, chatEvents) = await s.Stream("/v1/chat/completions", $"{{{chat}, \"stream\": true}}");
        Assert.Equal("[DONE]", chatEvents[^1]);
        var deltas = chatEvents.SkipLast(1).Select(e => JsonNode.Parse(e)!["choices"]![0]!["delta"]!).ToList();
        Assert.Equal("assistant", (string?)deltas[0]["role"]);
        Assert.Equal(Content(chatWhole), string.Concat(deltas.Select(d => (string?)d["content"] ?? "")));
    }

    [Fact]
    public async Task Recurrences_field_sets_T_and_a_seed_makes_sampling_reproducible()
    {
        string dir = ChatModels.Recurrent();
        using var s = Start(dir);
        // What the model gives at a T, computed below the server on a second copy (the generation loop at that T, s_0 and
        // sampler seeded as the runner seeds them): the server's text must be the one of the T it reports.
        using var tok = TokenizerLoader.Load(dir);
        using var copy = (RecurrentModel)ModelLoader.Load(dir, ScalarType.Float32, CPU);
        string Direct(string prompt, int t, int seed)
        {
            using var gen = new Generator((ulong)seed);
            var stops = new HashSet<int>([.. copy.EosTokenIds, .. tok.StopIds]);
            var p = tok.Encode(prompt);
            var ids = Generation.Generate(copy.At(Recurrence.Fixed(t, gen)), [p], new GenerationOptions(6, new SamplingOptions(1.0, Seed: seed), stops))[0];
            return tok.Decode([.. p, .. ids])[tok.Decode(p).Length..];
        }
        async Task<(string Text, int T)> Ask(string prompt, int t, int seed)
        {
            var (status, body) = await s.Post("/v1/completions", $$"""{"prompt": "{{prompt}}", "max_tokens": 6, "temperature": 1.0, "seed": {{seed}}, "recurrences": {{t}}}""");
            Assert.Equal(HttpStatusCode.OK, status);
            return (Text(body), (int)body["recurrences"]!);
        }
        var prompts = new[] { "the cat", "a dog ran", "hello world" };
        var atOne = new List<string>();
        var atEight = new List<string>();
        foreach (var p in prompts)
        {
            var a = await Ask(p, 8, 42);
            var b = await Ask(p, 8, 42);
            Assert.Equal(8, a.T);
            Assert.Equal(Direct(p, 8, 42), a.Text);
            Assert.Equal(a.Text, b.Text);
            atEight.Add(a.Text);
            var c = await Ask(p, 1, 42);
            Assert.Equal(1, c.T);
            Assert.Equal(Direct(p, 1, 42), c.Text);
            atOne.Add(c.Text);
        }
        Assert.NotEqual(atOne, atEight);

        // Without the field the model's default T applies.
        var (_, dflt) = await s.Post("/v1/completions", """{"prompt": "the cat", "max_tokens": 6, "temperature": 1.0, "seed": 42}""");
        Assert.Equal(4, (int)dflt["recurrences"]!);
        Assert.Equal(Direct("the cat", 4, 42), Text(dflt));
    }

    [Fact]
    public async Task Bad_requests_get_openai_style_errors_and_the_server_keeps_serving()
    {
        using var s = Start(ChatModels.Plain());
        async Task Bad(HttpStatusCode expected, string path, string json, string? param, string? code = null)
        {
            var (status, body) = await s.Post(path, json);
            Assert.Equal(expected, status);
            var error = body["error"]!;
            Assert.False(string.IsNullOrWhiteSpace((string?)error["message"]));
            Assert.Equal(expected == HttpStatusCode.InternalServerError ? "server_error" : "invalid_request_error", (string?)error["type"]);
            Assert.Equal(param, (string?)error["param"]);
            if (code is not null) Assert.Equal(code, (string?)error["code"]);
        }
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", "{\"prompt\": \"the\", ", null, "invalid_json");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", "[1, 2]", null, "invalid_json");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"max_tokens": 3}""", "prompt", "missing_field");
        await Bad(HttpStatusCode.BadRequest, "/v1/chat/completions", """{"max_tokens": 3}""", "messages", "missing_field");
        await Bad(HttpStatusCode.BadRequest, "/v1/chat/completions", """{"prompt": "x"}""", "prompt", "unknown_parameter");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": "the", "temperature": 2.5}""", "temperature");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": "the", "temperature": "hot"}""", "temperature");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": "the", "top_p": 0}""", "top_p");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": "the", "max_tokens": -1}""", "max_tokens");
        await Bad(HttpStatusCode.BadRequest, "/v1/chat/completions", """{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}""", "max_tokens");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": "the", "n": 0}""", "n");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": "the", "stop": 5}""", "stop");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": "the", "recurrences": 4}""", "recurrences");
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", """{"prompt": [1, 2, 999]}""", "prompt");
        await Bad(HttpStatusCode.BadRequest, "/v1/chat/completions", """{"messages": [{"role": "tool", "content": "x"}]}""", "messages[0].role");
        await Bad(HttpStatusCode.NotFound, "/v1/completions", """{"model": "gpt-4", "prompt": "the"}""", "model", "model_not_found");

        // Too long: the prompt fits the context of 256, the prompt plus max_tokens does not.
        string longPrompt = string.Join(' ', Enumerable.Repeat("cat", 250));
        var (status, body) = await s.Post("/v1/completions", $$"""{"prompt": "{{longPrompt}}", "max_tokens": 10}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("context_length_exceeded", (string?)body["error"]!["code"]);
        Assert.Contains("256", (string?)body["error"]!["message"]);
        string tooLong = string.Join(' ', Enumerable.Repeat("cat", 300));
        await Bad(HttpStatusCode.BadRequest, "/v1/completions", $$"""{"prompt": "{{tooLong}}", "max_tokens": 1}""", "prompt", "context_length_exceeded");

        var (nf, nfBody) = await s.Get("/v1/engines");
        Assert.Equal(HttpStatusCode.NotFound, nf);
        Assert.Equal("not_found", (string?)nfBody["error"]!["code"]);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await s.Get("/v1/completions")).Status);

        var (ok, okBody) = await s.Post("/v1/completions", """{"prompt": "the cat", "max_tokens": 3, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, ok);
        Assert.Equal(s.Tokenizer.Encode("the cat").Length, (int)okBody["usage"]!["prompt_tokens"]!);
    }

    /// <summary>Delegates to a real model but fails on a prompt holding a chosen token, to provoke an internal error.</summary>
    sealed class Faulty(ICausalLM inner, int poison) : DelegatingModel(inner, ownsInner: true)
    {
        public override Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false) =>
            inputIds.shape[1] > 1 && inputIds.eq(poison).any().item<bool>() ? throw new InvalidOperationException("poisoned token") : Inner.Forward(inputIds, keyPadding, cache, lastOnly);
    }

    [Fact]
    public async Task Internal_errors_are_500_json_and_later_requests_still_work()
    {
        string dir = ChatModels.Plain();
        using var tok = TokenizerLoader.Load(dir);
        using var model = new Faulty(ModelLoader.Load(dir, ScalarType.Float32, CPU), poison: 7);
        var runner = new ModelRunner(model, tok);
        var log = new List<string>();
        using var server = new OpenAiServer(runner, ChatTemplate.Plain, new ServerOptions { Port = 0, ModelName = "tiny", Log = s => { lock (log) log.Add(s); } });
        server.Start();
        using var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(30) };

        using var bad = await http.PostAsync("/v1/completions", new StringContent("""{"prompt": [5, 7, 9], "max_tokens": 2}"""));
        Assert.Equal(HttpStatusCode.InternalServerError, bad.StatusCode);
        var error = JsonNode.Parse(await bad.Content.ReadAsStringAsync())!["error"]!;
        Assert.Equal("server_error", (string?)error["type"]);
        Assert.Contains("poisoned token", (string?)error["message"]);
        lock (log) Assert.Contains(log, l => l.Contains("poisoned token"));

        using var good = await http.PostAsync("/v1/completions", new StringContent("""{"prompt": [5, 6], "max_tokens": 2, "temperature": 0}"""));
        Assert.Equal(HttpStatusCode.OK, good.StatusCode);
    }

    [Fact]
    public async Task Concurrent_requests_are_all_answered()
    {
        using var s = Start(ChatModels.Recurrent(ChatModels.ChatMLTemplate), maxBatch: 3);
        string[] bodies =
        [
            """{"prompt": "the cat", "max_tokens": 3, "temperature": 0}""",
            """{"prompt": "a dog ran to the mat", "max_tokens": 5, "temperature": 0}""",
            """{"prompt": "hello", "max_tokens": 2, "temperature": 0}""",
            """{"prompt": "red blue", "max_tokens": 4, "temperature": 0, "recurrences": 2}""",
            """{"prompt": "small big", "max_tokens": 3, "temperature": 0.8, "seed": 1}""",
            """{"prompt": "the mat", "max_tokens": 4, "temperature": 0, "stop": ["w"]}""",
        ];
        var tasks = bodies.Select(b => s.Post("/v1/completions", b))
            .Append(s.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}"""))
            .ToList();
        var streamed = s.Stream("/v1/completions", """{"prompt": "the dog", "max_tokens": 3, "stream": true, "temperature": 0}""");
        var results = await Task.WhenAll(tasks);
        foreach (var (status, body) in results)
        {
            Assert.Equal(HttpStatusCode.OK, status);
            int completion = (int)body["usage"]!["completion_tokens"]!;
            Assert.InRange(completion, 0, 5);
        }
        // Each row of a batch keeps its own limit and its own stop strings.
        Assert.True((int)results[2].Body["usage"]!["completion_tokens"]! <= 2);
        Assert.DoesNotContain("w", Text(results[5].Body));
        Assert.Equal(2, (int)results[3].Body["recurrences"]!);
        Assert.Equal("[DONE]", (await streamed).Events[^1]);
    }
}
