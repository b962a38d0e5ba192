using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Recur.Serving;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Serving;

/// <summary>
/// The server under concurrent load, on 127.0.0.1 with bounded loops: many clients at once, slow and idle
/// connections, malformed bodies, and an API key. Not beside other tests: the constant collections of the first test
/// reach every thread of the process, so any tensor a test running beside it left to the GC was freed in the middle of
/// a libtorch call (src/Recur/Model/Scalars.cs), which crashed the test host.
/// </summary>
[Collection(ProcessSwitchesCollection.Name)]
public sealed class ServerStressTests
{
    static async Task<(HttpStatusCode Status, string Body)> Post(HttpClient http, string path, string json)
    {
        using var content = new StringContent(json, Encoding.UTF8, "application/json");
        using var res = await http.PostAsync(path, content);
        return (res.StatusCode, await res.Content.ReadAsStringAsync());
    }

    /// <summary>
    /// 32 clients × 4 requests: identical greedy prompts (which the worker batches) mixed with seeded sampling,
    /// while another thread keeps the garbage collector busy. Every request must succeed, and identical greedy
    /// requests must get identical text. Under constant collections TorchSharp's temporary Scalars (the implicit
    /// alpha of a + b, an epsilon) could be finalized while libtorch still read them, failing a batch with
    /// "ExternalException … toFloat at c10/core/Scalar.h" inside add_Tensor.
    /// </summary>
    [Fact]
    public async Task Thirty_two_clients_with_batched_identical_requests_all_succeed_under_constant_garbage_collection()
    {
        using var s = ServerLimitTests.Serve(options: new ServerOptions { MaxBatch = 4, MaxQueue = 256, RequestTimeout = TimeSpan.FromSeconds(45) });
        // A collection every millisecond: enough to finalize a lost Scalar mid-call, not enough to stall the test.
        using var collector = new Collector();
        var sw = Stopwatch.StartNew();
        const string greedy = """{"prompt": "the cat sat on the", "max_tokens": 8, "temperature": 0}""";
        var clients = Enumerable.Range(0, 32).Select(c => Task.Run(async () =>
        {
            var results = new List<(bool Greedy, HttpStatusCode Status, string Body)>();
            for (int i = 0; i < 4 && sw.Elapsed < TimeSpan.FromSeconds(40); i++)
            {
                bool isGreedy = (c + i) % 4 != 3;
                var (status, body) = await Post(s.Http, "/v1/completions", isGreedy
                    ? greedy
                    : $$"""{"prompt": "a dog ran", "max_tokens": 6, "temperature": 0.8, "seed": {{c}}}""");
                results.Add((isGreedy, status, body));
            }
            return results;
        })).ToList();
        var all = (await Task.WhenAll(clients)).SelectMany(r => r).ToList();
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"took {sw.Elapsed}");
        var failed = all.Where(r => r.Status != HttpStatusCode.OK).ToList();
        Assert.True(failed.Count == 0, $"{failed.Count} of {all.Count} requests failed; first: {failed.FirstOrDefault().Status} {failed.FirstOrDefault().Body}");
        Assert.True(all.Count >= 64, $"only {all.Count} requests finished in time");
        var greedyTexts = all.Where(r => r.Greedy).Select(r => (string?)JsonNode.Parse(r.Body)!["choices"]![0]!["text"]).Distinct().ToList();
        Assert.Single(greedyTexts);
        Assert.True(s.Logged("batching"), "no batch was formed: the test did not exercise batched generation");
    }

    [Fact]
    public async Task Slow_and_idle_connections_are_closed_and_the_server_keeps_answering()
    {
        using var s = ServerLimitTests.Serve(options: new ServerOptions
        {
            HeaderTimeout = TimeSpan.FromSeconds(1), KeepAliveTimeout = TimeSpan.FromSeconds(1), BodyTimeout = TimeSpan.FromSeconds(2), MaxConnections = 40,
        });
        var ep = new IPEndPoint(IPAddress.Loopback, s.Server.BaseAddress.Port);
        // 30 slowloris connections: a request line and one header, then nothing.
        var sockets = new List<Socket>();
        for (int i = 0; i < 30; i++)
        {
            var sock = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await sock.ConnectAsync(ep);
            await sock.SendAsync(Encoding.ASCII.GetBytes("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"));
            sockets.Add(sock);
        }
        // A body that trickles: the headers promise 100 bytes, 10 arrive.
        var trickle = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await trickle.ConnectAsync(ep);
        await trickle.SendAsync(Encoding.ASCII.GetBytes("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":"));
        sockets.Add(trickle);

        var (ok, _) = await Post(s.Http, "/v1/completions", """{"prompt": "the cat", "max_tokens": 2, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, ok);

        // Within a bounded wait every slow connection is closed by the server (a read returns 0 or fails).
        var sw = Stopwatch.StartNew();
        int closed = 0;
        foreach (var sock in sockets)
        {
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try
            {
                var buf = new byte[4096];
                while (await sock.ReceiveAsync(buf, SocketFlags.None, wait.Token) > 0) { }
                closed++;
            }
            catch (SocketException) { closed++; }
            catch (OperationCanceledException) { }
            sock.Dispose();
        }
        Assert.Equal(sockets.Count, closed);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"closing took {sw.Elapsed}");
        lock (s.Log) Assert.DoesNotContain(s.Log, l => l.Contains("   at ", StringComparison.Ordinal));
        var (again, _) = await Post(s.Http, "/v1/completions", """{"prompt": "the cat", "max_tokens": 2, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, again);
    }

    [Fact]
    public async Task Invalid_utf8_is_a_400_and_an_aborted_body_logs_one_line()
    {
        using var s = ServerLimitTests.Serve();
        using var content = new ByteArrayContent([.. "{\"prompt\": \""u8, 0xff, 0xfe, .. "\"}"u8]);
        using var res = await s.Http.PostAsync("/v1/completions", content);
        Assert.Equal(HttpStatusCode.BadRequest, res.StatusCode);
        Assert.Contains("invalid_encoding", await res.Content.ReadAsStringAsync());

        var sock = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await sock.ConnectAsync(new IPEndPoint(IPAddress.Loopback, s.Server.BaseAddress.Port));
        await sock.SendAsync(Encoding.ASCII.GetBytes("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"prompt\": \"the"));
        await Task.Delay(200);
        sock.Close(0); // reset mid-body
        for (int i = 0; i < 50 && !s.Logged("POST /v1/completions"); i++) await Task.Delay(100);
        lock (s.Log)
        {
            Assert.DoesNotContain(s.Log, l => l.Contains("   at ", StringComparison.Ordinal));
            Assert.DoesNotContain(s.Log, l => l.Contains(" 500 ", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task An_api_key_is_required_as_a_bearer_token_on_v1_but_not_on_health()
    {
        using var s = ServerLimitTests.Serve(options: new ServerOptions { ApiKey = "sk-test-123" });
        Assert.Equal(HttpStatusCode.OK, (await s.Http.GetAsync("/health")).StatusCode);
        using (var none = await s.Http.GetAsync("/v1/models"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, none.StatusCode);
            Assert.Contains("invalid_api_key", await none.Content.ReadAsStringAsync());
        }
        foreach (var (header, expected) in new[] { ("Bearer wrong", HttpStatusCode.Unauthorized), ("sk-test-123", HttpStatusCode.Unauthorized), ("Bearer sk-test-123", HttpStatusCode.OK) })
        {
            using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent("""{"prompt": "the", "max_tokens": 1}""", Encoding.UTF8, "application/json") };
            req.Headers.TryAddWithoutValidation("Authorization", header);
            using var res = await s.Http.SendAsync(req);
            Assert.Equal(expected, res.StatusCode);
        }
        Assert.True(new ServerOptions { Host = "127.0.0.1" }.LoopbackOnly);
        Assert.True(new ServerOptions { Host = "::1" }.LoopbackOnly);
        Assert.False(new ServerOptions { Host = "0.0.0.0" }.LoopbackOnly);
    }
}
