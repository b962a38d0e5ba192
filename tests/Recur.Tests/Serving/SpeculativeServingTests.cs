using System.Net;
using System.Text;
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
/// <c>recur serve --speculate</c>: greedy requests that run alone on a recurrent model decode speculatively and answer
/// exactly what the same server answers without speculation; what cannot speculate decodes plainly or is refused at
/// start-up.
/// </summary>
public sealed class SpeculativeServingTests
{
    sealed class Server : IDisposable
    {
        readonly ITokenizer _tok;
        readonly ICausalLM _model;
        readonly OpenAiServer _server;
        readonly HttpClient _http;
        public ModelRunner Runner { get; }

        public Server(string dir, SpeculativeOptions? speculate)
        {
            _tok = TokenizerLoader.Load(dir);
            _model = ModelLoader.Load(dir, ScalarType.Float32, CPU);
            Runner = new ModelRunner(_model, _tok) { Speculate = speculate };
            var template = ChatTemplate.Detect(ChatTemplateFile.Read(_tok.SourcePath), "<s>", "</s>");
            _server = new OpenAiServer(Runner, template, new ServerOptions { Port = 0, ModelName = "tiny", MaxBatch = 4, MaxRecurrences = 64, Log = _ => { } });
            _server.Start();
            _http = new HttpClient { BaseAddress = _server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        }

        /// <summary>The response body as text (its id and creation time removed), after checking the status.</summary>
        public async Task<string> Post(string path, string json)
        {
            using var content = new StringContent(json, Encoding.UTF8, "application/json");
            using var res = await _http.PostAsync(path, content);
            string text = await res.Content.ReadAsStringAsync();
            Assert.True(res.StatusCode == HttpStatusCode.OK, text);
            if (text.StartsWith("data: ", StringComparison.Ordinal))
                return string.Concat(text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => e["data: ".Length..]).Where(e => e != "[DONE]")
                    .Select(e => Delta(JsonNode.Parse(e)!)));
            var body = JsonNode.Parse(text)!.AsObject();
            body.Remove("id");
            body.Remove("created");
            return body.ToJsonString();
        }

        static string Delta(JsonNode chunk) =>
            (string?)chunk["choices"]![0]!["text"] ?? (string?)chunk["choices"]![0]!["delta"]?["content"] ?? "";

        public void Dispose()
        {
            _http.Dispose();
            _server.Dispose();
            _model.Dispose();
            _tok.Dispose();
        }
    }

    [Fact]
    public async Task Greedy_requests_answer_what_plain_serving_answers()
    {
        // mean_recurrence 4, s_0 random (σ > 0): every request gives a seed, which also drives s_0.
        string dir = ChatModels.Recurrent(ChatModels.ChatMLTemplate);
        using var plain = new Server(dir, null);
        using var spec = new Server(dir, new SpeculativeOptions(2, 3));
        string[] requests =
        [
            """{"prompt": "the cat", "max_tokens": 24, "temperature": 0, "seed": 1}""",
            """{"prompt": "a dog ran", "max_tokens": 17, "temperature": 0, "seed": 9, "recurrences": 8}""",
            """{"prompt": "hello world", "max_tokens": 20, "temperature": 0, "seed": 2, "stop": ["e"]}""",
            """{"prompt": "the cat", "max_tokens": 12, "temperature": 0, "seed": 3, "stream": true, "recurrences": 6}""",
        ];
        string[] chats =
        [
            """{"messages": [{"role": "user", "content": "the cat sat"}], "max_tokens": 16, "temperature": 0, "seed": 3}""",
            """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, "temperature": 0, "seed": 4, "stream": true}""",
        ];
        foreach (var r in requests)
            Assert.Equal(await plain.Post("/v1/completions", r), await spec.Post("/v1/completions", r));
        foreach (var r in chats)
            Assert.Equal(await plain.Post("/v1/chat/completions", r), await spec.Post("/v1/chat/completions", r));
        Assert.Equal(requests.Length + chats.Length, spec.Runner.Speculated);
        Assert.Equal(0, plain.Runner.Speculated);

        // What cannot speculate decodes plainly and answers the same: T not above the draft's, sampling, log-probabilities.
        long before = spec.Runner.Speculated;
        string[] fallBack =
        [
            """{"prompt": "the cat", "max_tokens": 8, "temperature": 0, "seed": 5, "recurrences": 2}""",
            """{"prompt": "the cat", "max_tokens": 8, "temperature": 0.8, "seed": 4}""",
            """{"prompt": "the cat", "max_tokens": 8, "temperature": 0, "seed": 6, "logprobs": 2}""",
        ];
        foreach (var r in fallBack)
            Assert.Equal(await plain.Post("/v1/completions", r), await spec.Post("/v1/completions", r));
        Assert.Equal(before, spec.Runner.Speculated);
    }

    [Fact]
    public void A_model_that_cannot_speculate_is_refused_at_start_up_in_one_line()
    {
        Cli.CliErrorTests.OneLine(CliProcess.Run("serve", "--model", ChatModels.Plain(), "--port", "0", "--speculate", "draft=1,k=2"), "needs a recurrent model");
        Cli.CliErrorTests.OneLine(CliProcess.Run("serve", "--model", ChatModels.Recurrent(), "--port", "0", "--speculate", "draft=4,k=2"), "must be below the target T (4)");
        Cli.CliErrorTests.OneLine(CliProcess.Run("serve", "--model", ChatModels.Recurrent(), "--port", "0", "--speculate", "draft=2"), "--speculate: give both draft=T_d and k=K");
    }
}
