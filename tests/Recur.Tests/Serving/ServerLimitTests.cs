using System.Diagnostics;
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
/// The server's limits against hostile or careless clients: lengths that would overflow, deadlines, clients that
/// hang up. Every server listens on 127.0.0.1 and every loop is bounded.
/// </summary>
public sealed class ServerLimitTests
{
    /// <summary>A real model that sleeps in every forward, counts them and never ends a reply early: generation long enough to interrupt.</summary>
    internal sealed class Slow(ICausalLM inner, int sleepMs) : DelegatingModel(inner, ownsInner: true)
    {
        int _forwards;
        public int Forwards => Volatile.Read(ref _forwards);
        public override Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false)
        {
            Interlocked.Increment(ref _forwards);
            Thread.Sleep(sleepMs);
            // The special tokens (ids 0–4 of the chat models, EOS among them) are never chosen, so a request runs
            // to its max_tokens unless something stops it.
            return Inner.Forward(inputIds, keyPadding, cache, lastOnly).index_fill_(-1, arange(5L), float.NegativeInfinity);
        }
    }

    internal sealed class Served : IDisposable
    {
        public required ITokenizer Tokenizer { get; init; }
        public required ICausalLM Model { get; init; }
        public required ModelRunner Runner { get; init; }
        public required OpenAiServer Server { get; init; }
        public required HttpClient Http { get; init; }
        public List<string> Log { get; init; } = [];

        public async Task<(HttpStatusCode Status, JsonNode? Body)> Post(string path, string json, CancellationToken cancel = default)
        {
            using var content = new StringContent(json, Encoding.UTF8, "application/json");
            using var res = await Http.PostAsync(path, content, cancel);
            string text = await res.Content.ReadAsStringAsync(cancel);
            return (res.StatusCode, text.Length > 0 ? JsonNode.Parse(text) : null);
        }

        public bool Logged(string part) { lock (Log) return Log.Any(l => l.Contains(part, StringComparison.Ordinal)); }

        /// <summary>Waits (at most 20 s) until the slow model has done no forward for 0.5 s; returns the forwards done.</summary>
        public async Task<int> SettledForwards()
        {
            var slow = (Slow)Model;
            int last = -1;
            for (int i = 0; i < 40 && slow.Forwards != last; i++)
            {
                last = slow.Forwards;
                await Task.Delay(500);
            }
            return slow.Forwards;
        }

        public void Dispose()
        {
            Http.Dispose();
            Server.Dispose();
            Model.Dispose();
            Tokenizer.Dispose();
        }
    }

    /// <summary>A server for the tiny plain chat model (context 256), optionally slowed down per forward.</summary>
    internal static Served Serve(int sleepMs = 0, ServerOptions? options = null, string? modelDir = null)
    {
        string dir = modelDir ?? ChatModels.Plain();
        var tok = TokenizerLoader.Load(dir);
        ICausalLM model = ModelLoader.Load(dir, ScalarType.Float32, CPU);
        if (sleepMs > 0) model = new Slow(model, sleepMs);
        var runner = new ModelRunner(model, tok);
        var log = new List<string>();
        var server = new OpenAiServer(runner, ChatTemplate.Plain, (options ?? new ServerOptions()) with
        {
            Host = "127.0.0.1", Port = 0, ModelName = "tiny", Log = s => { lock (log) log.Add(s); },
        });
        server.Start();
        var http = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromSeconds(60) };
        return new Served { Tokenizer = tok, Model = model, Runner = runner, Server = server, Http = http, Log = log };
    }

    [Fact]
    public async Task Max_tokens_near_int_max_is_refused_as_too_long_and_the_worker_stays_free()
    {
        using var s = Serve();
        var sw = Stopwatch.StartNew();
        // 4 prompt tokens + 2^31 − 1 wrapped negative in 32-bit arithmetic and slipped past the context check.
        var (status, body) = await s.Post("/v1/completions", """{"prompt": "the cat sat on", "max_tokens": 2147483647}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("context_length_exceeded", (string?)body!["error"]!["code"]);
        Assert.Equal("max_tokens", (string?)body["error"]!["param"]);
        var (ok, _) = await s.Post("/v1/completions", """{"prompt": "the cat", "max_tokens": 3, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, ok);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}");
    }

    [Fact]
    public void Generation_refuses_a_limit_that_would_wrap_past_the_context()
    {
        using var m = TestModels.Random(Presets.TinyTest);
        var e = Assert.Throws<RecurUserException>(() => Generation.Generate(m, [[1, 2, 3]], new GenerationOptions(int.MaxValue)));
        Assert.Contains("exceeds the model's context", e.Message);
    }

    [Fact]
    public async Task A_request_past_its_deadline_gets_504_and_its_generation_stops()
    {
        using var s = Serve(sleepMs: 40, new ServerOptions { RequestTimeout = TimeSpan.FromSeconds(2) });
        var sw = Stopwatch.StartNew();
        // 200 tokens at ≥ 40 ms each would take 8 s or more.
        var (status, body) = await s.Post("/v1/completions", """{"prompt": "the cat", "max_tokens": 200, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.GatewayTimeout, status);
        Assert.Equal("request_timeout", (string?)body!["error"]!["code"]);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"the deadline of 2 s answered after {sw.Elapsed}");
        // The 200 forwards the request asked for are not all run: generation stopped at the deadline.
        int forwards = await s.SettledForwards();
        Assert.True(forwards < 150, $"generation went on after the deadline ({forwards} forwards)");

        // Streaming requests end with an error event at the deadline too.
        using var content = new StringContent("""{"prompt": "the cat", "max_tokens": 200, "temperature": 0, "stream": true}""", Encoding.UTF8, "application/json");
        using var res = await s.Http.PostAsync("/v1/completions", content);
        string events = await res.Content.ReadAsStringAsync();
        Assert.Contains("request_timeout", events);
        Assert.DoesNotContain("[DONE]", events);

        // The server still answers afterwards. Wait for the timed-out stream's generation to stop first: on a loaded
        // host the worker could still be finishing it, and that wait would count against this request's 2 s deadline.
        await s.SettledForwards();
        var (ok, _) = await s.Post("/v1/completions", """{"prompt": "the cat", "max_tokens": 1, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, ok);
    }

    [Fact]
    public async Task A_client_that_hangs_up_on_a_non_streaming_request_stops_its_generation()
    {
        using var s = Serve(sleepMs: 40, new ServerOptions { RequestTimeout = TimeSpan.Zero });
        using (var hangUp = new CancellationTokenSource(TimeSpan.FromMilliseconds(600)))
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
                s.Post("/v1/completions", """{"prompt": "the cat", "max_tokens": 200, "temperature": 0}""", hangUp.Token));
        // Wait (bounded) for the server to notice; then the forwards must stop well short of 200.
        for (int i = 0; i < 50 && !s.Logged("client disconnected"); i++) await Task.Delay(100);
        Assert.True(s.Logged("client disconnected"), "the server did not log the disconnect");
        int forwards = await s.SettledForwards();
        Assert.True(forwards < 150, $"generation went on after the client left ({forwards} of 200 forwards)");
        var (ok, _) = await s.Post("/v1/completions", """{"prompt": "the cat", "max_tokens": 2, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, ok);
    }

    [Fact]
    public void Generate_caps_a_huge_max_new_tokens_at_the_context()
    {
        string dir = ChatModels.Plain();
        var sw = Stopwatch.StartNew();
        var r = CliProcess.Run("generate", "--model", dir, "--prompt-ids", "1 5 9 13", "--max-new-tokens", "2147483647",
            "--output-ids", "--threads", "1");
        Assert.True(r.Code == 0, r.Stderr);
        Assert.Contains("--max-new-tokens 2147483647 capped at 252", r.Stderr);
        int produced = r.Stdout.Split([' ', '\n'], StringSplitOptions.RemoveEmptyEntries).Length;
        Assert.InRange(produced, 0, 252);
        Assert.True(sw.Elapsed < TimeSpan.FromMinutes(2), $"took {sw.Elapsed}");
    }
}
