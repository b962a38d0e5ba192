using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Recur.Engine;
using Recur.Tokenization;

namespace Recur.Serving;

/// <summary>Where and how <see cref="OpenAiServer"/> listens.</summary>
public sealed record ServerOptions
{
    /// <summary>Interface to bind: 127.0.0.1 (default, this machine only), localhost, ::1, an address, or 0.0.0.0 / * for all.</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>TCP port; 0 picks a free one (see <see cref="OpenAiServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8000;
    /// <summary>The model id clients see in <c>/v1/models</c> and pass as <c>model</c>.</summary>
    public string ModelName { get; init; } = "recur";
    /// <summary>Most requests run as one batch (non-streaming greedy requests only; see <see cref="ModelWorker"/>).</summary>
    public int MaxBatch { get; init; } = 4;
    /// <summary>Requests that may wait for the model before new ones get 503.</summary>
    public int MaxQueue { get; init; } = 64;
    /// <summary>Upper bound on a request's <c>recurrences</c>: the KV cache grows with p + r·T + c slots.</summary>
    public int MaxRecurrences { get; init; } = 256;
    public int MaxBodyBytes { get; init; } = 8 << 20;
    /// <summary>Most choices (<c>n</c>) per prompt.</summary>
    public int MaxChoices { get; init; } = 16;
    /// <summary>
    /// Most prompts in one completions request. A request with several prompts is one place in the queue and runs
    /// under one request deadline, with every prompt checked against the context like a single one.
    /// </summary>
    public int MaxPromptsPerRequest { get; init; } = 1024;
    /// <summary>A chat request without <c>max_tokens</c> may use the rest of the context, up to this many tokens.</summary>
    public int DefaultChatMaxTokens { get; init; } = 1024;
    /// <summary>
    /// Longest a completion request may take from arrival to its last token, queueing included; past it the
    /// generation is cancelled and the client gets 504 (or an error event when streaming). Zero: no limit.
    /// </summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>
    /// When set, every <c>/v1</c> request must carry <c>Authorization: Bearer</c> with this key (401 otherwise), as
    /// vLLM's and llama.cpp's servers do; <c>/health</c> stays open. Null: no authentication.
    /// </summary>
    public string? ApiKey { get; init; }
    /// <summary>Longest wait for a request's headers once a connection is open (slow or idle clients are dropped).</summary>
    public TimeSpan HeaderTimeout { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Longest an idle keep-alive connection stays open between requests.</summary>
    public TimeSpan KeepAliveTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Longest a request body may take to arrive; a body trickling in slower is cut off with 408.</summary>
    public TimeSpan BodyTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Most connections open at once; more are refused until some close.</summary>
    public int MaxConnections { get; init; } = 512;
    /// <summary>One line per request and per server event; null is silent.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>True when <see cref="Host"/> is reachable only from this machine.</summary>
    public bool LoopbackOnly => Host is "localhost" || (IPAddress.TryParse(Host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip));
}

/// <summary>
/// An OpenAI-compatible HTTP server for one model: <c>GET /v1/models</c>, <c>POST /v1/completions</c> and
/// <c>POST /v1/chat/completions</c>, each with <c>stream: true</c> server-sent events, plus the extra request
/// field <c>recurrences</c> (test-time T). Built on ASP.NET Core's Kestrel (its connection limits and
/// timeouts; see docs/serving.md for why not <see cref="HttpListener"/>); all generation runs on one
/// <see cref="ModelWorker"/> thread. Every failure of a request becomes an OpenAI-style JSON error and the
/// server keeps serving.
/// </summary>
public sealed class OpenAiServer : IDisposable
{
    static readonly JsonSerializerOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    readonly ModelRunner _runner;
    readonly ChatTemplate _template;
    readonly ServerOptions _o;
    readonly ModelWorker _worker;
    readonly CancellationTokenSource _stopping = new();
    readonly HashSet<Task> _inFlight = [];
    readonly int[] _chatStopIds;
    readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    WebApplication? _app;

    public OpenAiServer(ModelRunner runner, ChatTemplate template, ServerOptions options)
    {
        _runner = runner;
        _template = template;
        _o = options;
        _worker = new ModelWorker(runner, options.MaxBatch, options.MaxQueue, options.Log);
        _chatStopIds = [.. template.EndOfTurnTokens.Select(t => runner.Tokenizer.TokenToId(t)).OfType<int>()];
    }

    /// <summary>The server's root, e.g. <c>http://127.0.0.1:8000/</c>; set by <see cref="Start"/>.</summary>
    public Uri BaseAddress { get; private set; } = new("http://127.0.0.1/");

    /// <summary>The address a <see cref="ServerOptions.Host"/> names; null for all interfaces.</summary>
    static IPAddress? ParseHost(string host) => host switch
    {
        "0.0.0.0" or "*" or "+" => null,
        "localhost" => IPAddress.Loopback,
        _ => IPAddress.TryParse(host.Trim('[', ']'), out var ip) ? ip
            : throw RecurUserException.About($"ServerOptions.Host must be an IP address, localhost or 0.0.0.0 (got '{host}')", "ServerOptions.Host"),
    };

    /// <summary>Binds the port and starts accepting requests.</summary>
    public void Start()
    {
        if (_o.Port is < 0 or > 65535) throw RecurUserException.About($"ServerOptions.Port must be between 0 and 65535 (got {_o.Port})", "ServerOptions.Port");
        var ip = ParseHost(_o.Host);
        // An empty builder: no configuration files, environment variables or logging providers are read, so
        // nothing in the working directory changes how the server listens, and Kestrel logs nothing itself.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = _o.MaxBodyBytes;
            // Slow and idle connections are closed instead of held until the file limit (slowloris).
            k.Limits.RequestHeadersTimeout = _o.HeaderTimeout;
            k.Limits.KeepAliveTimeout = _o.KeepAliveTimeout;
            k.Limits.MaxConcurrentConnections = _o.MaxConnections;
            k.Limits.MaxConcurrentUpgradedConnections = 0;
            k.Limits.MinRequestBodyDataRate = new MinDataRate(bytesPerSecond: 100, gracePeriod: TimeSpan.FromSeconds(5));
            if (ip is null) k.ListenAnyIP(_o.Port);
            else k.Listen(ip, _o.Port);
        });
        var app = builder.Build();
        app.Run(Track);
        try { app.StartAsync().GetAwaiter().GetResult(); }
        catch (IOException e)
        {
            ((IDisposable)app).Dispose();
            throw RecurUserException.About($"cannot listen on {_o.Host}:{_o.Port}: {e.Message} (is another server using the port? choose one with ServerOptions.Port)", "ServerOptions.Port");
        }
        _app = app;
        var bound = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First());
        string shown = ip is null ? "0.0.0.0" : ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString();
        BaseAddress = new Uri($"http://{shown}:{bound.Port}/");
    }

    Task Track(HttpContext ctx)
    {
        var task = HandleAsync(ctx);
        lock (_inFlight) _inFlight.Add(task);
        _ = task.ContinueWith(t => { lock (_inFlight) _inFlight.Remove(t); }, TaskScheduler.Default);
        return task;
    }

    /// <summary>
    /// Stops accepting requests, lets requests in progress finish for up to <paramref name="grace"/>, then
    /// cancels what is left and closes the listener.
    /// </summary>
    public async Task StopAsync(TimeSpan grace)
    {
        if (_stopping.IsCancellationRequested) return;
        _stopping.Cancel();
        Task[] running;
        lock (_inFlight) running = [.. _inFlight];
        var all = Task.WhenAll(running);
        if (await Task.WhenAny(all, Task.Delay(grace)).ConfigureAwait(false) != all)
            _o.Log?.Invoke($"note: {running.Count(t => !t.IsCompleted)} request(s) still running after {grace.TotalSeconds:0} s; cancelling them");
        _worker.Stop(cancelRunning: true, TimeSpan.FromSeconds(30));
        if (_app is not null)
        {
            using var cut = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try { await _app.StopAsync(cut.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { }
        }
    }

    public void Dispose()
    {
        StopAsync(TimeSpan.Zero).GetAwaiter().GetResult();
        _worker.Dispose();
        if (_app is not null) _app.DisposeAsync().AsTask().GetAwaiter().GetResult();
        _stopping.Dispose();
    }

    async Task HandleAsync(HttpContext ctx)
    {
        var sw = Stopwatch.StartNew();
        var req = ctx.Request;
        var res = ctx.Response;
        string path = (req.Path.Value ?? "").TrimEnd('/');
        string what = $"{req.Method} {path}";
        var state = new ResponseState();
        try
        {
            if (_stopping.IsCancellationRequested) throw new ApiException(503, "the server is shutting down", "server_error");
            if (_o.ApiKey is not null && path != "/health" && !Authorized(req.Headers.Authorization.ToString()))
            {
                res.Headers.WWWAuthenticate = "Bearer";
                throw new ApiException(401, "missing or incorrect API key: send it as 'Authorization: Bearer KEY'", code: "invalid_api_key");
            }
            switch (req.Method, path)
            {
                case ("GET", "/health"):
                    await WriteJson(res, 200, new JsonObject { ["status"] = "ok", ["queued"] = _worker.Pending });
                    break;
                case ("GET", "/v1/models"):
                    await WriteJson(res, 200, new JsonObject { ["object"] = "list", ["data"] = new JsonArray([.. ModelIds().Select(x => (JsonNode)ModelCard(x.Id, x.T))]) });
                    break;
                case ("GET", _) when path.StartsWith("/v1/models/", StringComparison.Ordinal):
                    string id = Uri.UnescapeDataString(path["/v1/models/".Length..]);
                    await WriteJson(res, 200, ModelCard(id, ModelRecurrences(id)));
                    break;
                case ("GET", "/tokenizer_info"):
                    await WriteJson(res, 200, TokenizerInfo());
                    break;
                case ("POST", "/tokenize"):
                    await WriteJson(res, 200, Tokenize(await ReadBody(req)));
                    break;
                case ("POST", "/detokenize"):
                    await WriteJson(res, 200, Detokenize(await ReadBody(req)));
                    break;
                case ("POST", "/v1/completions"):
                    await Complete(ctx, chat: false, state);
                    break;
                case ("POST", "/v1/chat/completions"):
                    await Complete(ctx, chat: true, state);
                    break;
                case (_, "/v1/models" or "/v1/completions" or "/v1/chat/completions" or "/health" or "/tokenizer_info" or "/tokenize" or "/detokenize"):
                    throw new ApiException(405, $"method {req.Method} is not allowed on {path}", code: "method_not_allowed");
                default:
                    throw new ApiException(404, $"unknown route {req.Method} {path}; this server offers GET /v1/models, POST /v1/completions, POST /v1/chat/completions, GET /tokenizer_info, POST /tokenize and POST /detokenize", code: "not_found");
            }
            _o.Log?.Invoke($"{what} {res.StatusCode} {state.Summary}{sw.Elapsed.TotalSeconds:0.00} s");
        }
        catch (Exception e)
        {
            // A client that hung up (an aborted body, a reset) is one line, whatever was thrown.
            if (ctx.RequestAborted.IsCancellationRequested && e is not ApiException)
            {
                _o.Log?.Invoke($"{what} client disconnected ({e.GetType().Name}), {sw.Elapsed.TotalSeconds:0.00} s");
                return;
            }
            var api = e as ApiException
                // Kestrel's own verdicts on the request (body too large, body read too slowly, malformed framing).
                ?? (e is Microsoft.AspNetCore.Http.BadHttpRequestException b ? new ApiException(b.StatusCode, $"bad request: {b.Message}", code: "bad_request") : null)
                ?? (e is OperationCanceledException ? new ApiException(503, "the request was cancelled: the server is shutting down", "server_error") : null)
                ?? new ApiException(500, $"internal error: {e.GetType().Name}: {e.Message}", "server_error");
            // Only internal errors carry a stack trace into the log; a client's mistake is one line.
            if (api.Status >= 500) _o.Log?.Invoke($"{what} {api.Status} error: {(e is ApiException or OperationCanceledException ? api.Message : e.ToString())}");
            else _o.Log?.Invoke($"{what} {api.Status} {api.Message}");
            await TryWriteError(res, api, state);
        }
    }

    // Constant time, so the key cannot be found a byte at a time from response timings.
    bool Authorized(string header)
    {
        const string scheme = "Bearer ";
        if (!header.StartsWith(scheme, StringComparison.OrdinalIgnoreCase)) return false;
        var given = Encoding.UTF8.GetBytes(header[scheme.Length..].Trim());
        var key = Encoding.UTF8.GetBytes(_o.ApiKey!);
        return System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(given, key);
    }

    /// <summary>
    /// The ids <c>/v1/models</c> lists: the served name, and for a recurrent model <c>name@T=N</c> for the powers of two
    /// up to <see cref="ServerOptions.MaxRecurrences"/> and the default T (any other N in range works too).
    /// </summary>
    IEnumerable<(string Id, int? T)> ModelIds()
    {
        yield return (_o.ModelName, null);
        if (!_runner.IsRecurrent) yield break;
        var ts = new SortedSet<int>();
        for (int x = 1; x <= _o.MaxRecurrences; x *= 2) ts.Add(x);
        if (_runner.DefaultRecurrences is int d && d <= _o.MaxRecurrences) ts.Add(d);
        foreach (int x in ts) yield return ($"{_o.ModelName}@T={x}", x);
    }

    JsonObject ModelCard(string id, int? t) => new()
    {
        ["id"] = id, ["object"] = "model", ["created"] = _created, ["owned_by"] = "recur",
        ["context_length"] = _runner.ContextLength,
        ["recurrent"] = _runner.IsRecurrent,
        ["default_recurrences"] = _runner.DefaultRecurrences,
        ["recurrences"] = t ?? _runner.DefaultRecurrences,
    };

    // vLLM's tokenizer endpoints, in the shapes lm-evaluation-harness's RemoteTokenizer reads (lm_eval/utils.py): with
    // them, lm-eval's tokenizer_backend=auto (or remote) tokenizes through the server and needs no local tokenizer.

    JsonObject TokenizerInfo()
    {
        var tok = _runner.Tokenizer;
        string? Text(int? id) => id is int x ? tok.IdToToken(x) : null;
        return new JsonObject
        {
            ["eos_token"] = Text(tok.EosId), ["bos_token"] = Text(tok.BosId), ["pad_token"] = null,
            ["model_max_length"] = _runner.ContextLength, ["tokenizer_class"] = tok.GetType().Name,
        };
    }

    JsonObject Tokenize(byte[] body)
    {
        using var doc = ParseObject(body);
        var root = doc.RootElement;
        foreach (var p in root.EnumerateObject())
            if (p.Name is not ("prompt" or "add_special_tokens" or "model"))
                throw new ApiException(400, $"unrecognized request field '{p.Name}' for /tokenize (prompt, add_special_tokens)", param: p.Name, code: "unknown_parameter");
        if (!root.TryGetProperty("prompt", out var prompt) || prompt.ValueKind != JsonValueKind.String)
            throw ApiException.BadValue("prompt", "prompt must be a string");
        bool special = !root.TryGetProperty("add_special_tokens", out var a) || a.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw ApiException.BadValue("add_special_tokens", "add_special_tokens must be true or false"),
        };
        int[] ids;
        try { ids = _runner.Tokenizer.Encode(prompt.GetString()!, special); }
        catch (RecurUserException e) { throw ApiException.BadValue("prompt", e.Message); }
        return new JsonObject { ["tokens"] = new JsonArray([.. ids.Select(x => (JsonNode)x)]), ["count"] = ids.Length, ["max_model_len"] = _runner.ContextLength };
    }

    JsonObject Detokenize(byte[] body)
    {
        using var doc = ParseObject(body);
        var root = doc.RootElement;
        foreach (var p in root.EnumerateObject())
            if (p.Name is not ("tokens" or "model"))
                throw new ApiException(400, $"unrecognized request field '{p.Name}' for /detokenize (tokens)", param: p.Name, code: "unknown_parameter");
        if (!root.TryGetProperty("tokens", out var tokens) || tokens.ValueKind != JsonValueKind.Array)
            throw ApiException.BadValue("tokens", "tokens must be a list of token ids");
        var ids = new List<int>();
        foreach (var e in tokens.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id) || id < 0 || id >= _runner.Model.VocabSize)
                throw ApiException.BadValue("tokens", $"tokens must be integers between 0 and {_runner.Model.VocabSize - 1}");
            ids.Add(id);
        }
        return new JsonObject { ["prompt"] = _runner.Tokenizer.Decode(ids, skipSpecialTokens: false) };
    }

    static JsonDocument ParseObject(byte[] body)
    {
        if (!System.Text.Unicode.Utf8.IsValid(body)) throw new ApiException(400, "the request body is not valid UTF-8", code: "invalid_encoding");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = 64 }); }
        catch (JsonException e) { throw new ApiException(400, $"the request body is not valid JSON: {e.Message}", code: "invalid_json"); }
        if (doc.RootElement.ValueKind == JsonValueKind.Object) return doc;
        doc.Dispose();
        throw new ApiException(400, "the request body must be a JSON object", code: "invalid_json");
    }

    ApiException ModelNotFound(string id) =>
        new(404, $"the model '{id}' does not exist; this server serves '{_o.ModelName}'", param: "model", code: "model_not_found");

    sealed class ResponseState
    {
        public bool Streaming;
        public string Summary = "";
    }

    /// <summary>The HTTP header that sets T for clients that cannot add a body field (see docs/serving.md).</summary>
    public const string RecurrencesHeader = "X-Recur-Recurrences";

    /// <summary>
    /// Splits a model id into the served name and the T of an <c>@T=N</c> suffix (<c>tiny@T=8</c>). Unknown names are
    /// 404; a suffix on a plain decoder, or an N that is not a T this server runs, is a 400 naming <c>model</c>.
    /// </summary>
    int? ModelRecurrences(string id)
    {
        int at = id.IndexOf("@T=", StringComparison.Ordinal);
        string name = at < 0 ? id : id[..at];
        if (name != _o.ModelName) throw ModelNotFound(id);
        if (at < 0) return null;
        if (!_runner.IsRecurrent) throw ApiException.BadValue("model", $"'{id}': the @T= suffix applies only to recurrent models; this server's model is a plain decoder (use '{_o.ModelName}')");
        string digits = id[(at + 3)..];
        int n = digits.Length is > 0 and <= 9 && digits.All(char.IsAsciiDigit) ? int.Parse(digits, System.Globalization.CultureInfo.InvariantCulture) : 0;
        if (n < 1 || n > _o.MaxRecurrences)
            throw ApiException.BadValue("model", $"'{id}': the suffix must be @T=N with N between 1 and {_o.MaxRecurrences}");
        return n;
    }

    /// <summary>
    /// T of a request, most specific first: the body's <c>recurrences</c>, then the <see cref="RecurrencesHeader"/>
    /// header, then the model id's <c>@T=N</c> suffix; null leaves the server's default. Each source is validated.
    /// </summary>
    int? RequestRecurrences(OpenAiRequest r, HttpRequest http)
    {
        int? fromModel = r.Model is null ? null : ModelRecurrences(r.Model);
        int? fromHeader = null;
        if (http.Headers.TryGetValue(RecurrencesHeader, out var h))
        {
            string v = h.ToString().Trim();
            if (!int.TryParse(v, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int x) || x < 1 || x > _o.MaxRecurrences)
                throw ApiException.BadValue(RecurrencesHeader, $"header {RecurrencesHeader} must be an integer between 1 and {_o.MaxRecurrences} (got '{v}')");
            if (!_runner.IsRecurrent)
                throw ApiException.BadValue(RecurrencesHeader, $"header {RecurrencesHeader} applies only to recurrent models; this server's model is a plain decoder");
            fromHeader = x;
        }
        if (r.Recurrences is not null && !_runner.IsRecurrent)
            throw ApiException.BadValue("recurrences", "recurrences applies only to recurrent models; this server's model is a plain decoder");
        return r.Recurrences ?? fromHeader ?? fromModel;
    }

    async Task Complete(HttpContext ctx, bool chat, ResponseState state)
    {
        byte[] body = await ReadBody(ctx.Request);
        var r = OpenAiRequest.Parse(body, chat, _o.MaxRecurrences, _o.MaxChoices, _o.MaxPromptsPerRequest);
        r = r with { Recurrences = RequestRecurrences(r, ctx.Request) };
        string modelId = r.Model ?? _o.ModelName;

        var tok = _runner.Tokenizer;
        string promptParam = chat ? "messages" : "prompt";
        var prompts = new List<int[]>();
        try
        {
            if (chat) prompts.Add(tok.Encode(_template.Render(r.Messages!), _template.AddSpecialTokens));
            else foreach (var p in r.Prompts) prompts.Add(p.Ids ?? tok.Encode(p.Text!));
        }
        catch (RecurUserException e) { throw ApiException.BadValue(promptParam, e.Message); }

        int ctxLen = _runner.ContextLength;
        long longest = 0;
        foreach (var (ids, i) in prompts.Select((x, i) => (x, i)))
        {
            string which = prompts.Count > 1 ? $"prompt {i}" : "the prompt";
            if (ids.Length == 0) throw ApiException.BadValue(promptParam, $"{which} encodes to no tokens");
            if (ids.Any(x => x < 0 || x >= _runner.Model.VocabSize))
                throw ApiException.BadValue("prompt", $"prompt token ids must be between 0 and {_runner.Model.VocabSize - 1}");
            // With max_tokens 0 a prompt may fill the context; otherwise at least one position must remain.
            if (ids.Length > ctxLen || (ids.Length == ctxLen && r.MaxTokens != 0))
                throw new ApiException(400, $"this model's maximum context length is {ctxLen} tokens, but {which} alone has {ids.Length}; shorten it",
                    param: promptParam, code: "context_length_exceeded");
            longest = Math.Max(longest, ids.Length);
        }
        // OpenAI's defaults: 16 tokens for completions, the rest of the context for chat, which we bound because
        // generation preallocates its KV cache for prompt + max_tokens positions.
        int maxTokens = r.MaxTokens ?? (int)Math.Min(chat ? _o.DefaultChatMaxTokens : 16, ctxLen - longest);
        // 64-bit: max_tokens near int.MaxValue must not wrap the sum negative and slip past the check.
        if (longest + maxTokens > ctxLen)
            throw new ApiException(400,
                $"this model's maximum context length is {ctxLen} tokens, but {longest + (long)maxTokens} were requested ({longest} in the {(prompts.Count > 1 ? "longest prompt" : "prompt")}, {maxTokens} for the completion); shorten the prompt or lower max_tokens",
                param: "max_tokens", code: "context_length_exceeded");

        var request = new TextRequest(prompts[0], maxTokens, r.Sampling, r.Recurrences,
            chat ? [.. r.Stop, .. _template.StopStrings] : r.Stop,
            chat ? _chatStopIds : null,
            chat ? TextLayout.ChatReply : TextLayout.ContinuesPrompt,
            r.Logprobs);
        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        int? t = _runner.EffectiveRecurrences(request);

        // One token for what ends this request early: the client hanging up or the deadline (shutdown stops the worker).
        using var deadline = _o.RequestTimeout > TimeSpan.Zero ? new CancellationTokenSource(_o.RequestTimeout) : new CancellationTokenSource();
        using var ended = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, deadline.Token);
        ApiException TimedOut() => new(504, $"the request did not finish within the server's request timeout of {_o.RequestTimeout.TotalSeconds:0.###} s", "server_error", code: "request_timeout");

        // Several prompts or choices, log-probabilities, echo or max_tokens 0: one job on the worker.
        if (prompts.Count > 1 || r.N > 1 || r.Echo || r.Logprobs is not null || maxTokens == 0)
        {
            JsonObject obj;
            try
            {
                var job = _worker.EnqueueJob(cancel => RunChoices(r, prompts, request, chat, cancel), ended.Token);
                obj = await job.WaitAsync(ended.Token);
            }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
            {
                state.Summary = "client disconnected, ";
                return;
            }
            catch (OperationCanceledException) when (deadline.IsCancellationRequested) { throw TimedOut(); }
            var envelope = Envelope(id, chat ? "chat.completion" : "text_completion", created, t, modelId);
            foreach (var (k, v) in obj.ToList()) { obj.Remove(k); envelope[k] = v; }
            state.Summary = $"{prompts.Count} prompt(s) × {r.N}, {envelope["usage"]!["prompt_tokens"]}+{envelope["usage"]!["completion_tokens"]} tok{(t is int x ? $", T = {x}" : "")}, ";
            await WriteJson(ctx.Response, 200, envelope);
            return;
        }

        if (!r.Stream)
        {
            TextResult result;
            try
            {
                // The worker drops a cancelled request (and stops a batch all of whose requests are cancelled);
                // WaitAsync also frees this handler at once while a shared batch finishes.
                result = await _worker.Enqueue(request, cancel: ended.Token).WaitAsync(ended.Token);
            }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
            {
                state.Summary = "client disconnected, ";
                return;
            }
            catch (OperationCanceledException) when (deadline.IsCancellationRequested) { throw TimedOut(); }
            state.Summary = Summary(result, t);
            var choice = chat
                ? new JsonObject { ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = result.Text }, ["logprobs"] = null, ["finish_reason"] = result.FinishReason }
                : new JsonObject { ["index"] = 0, ["text"] = result.Text, ["logprobs"] = null, ["finish_reason"] = result.FinishReason };
            var obj = Envelope(id, chat ? "chat.completion" : "text_completion", created, result.Recurrences, modelId);
            obj["choices"] = new JsonArray(choice);
            obj["usage"] = Usage(result);
            await WriteJson(ctx.Response, 200, obj);
            return;
        }

        // Streaming: the worker thread pushes text into a channel; this task writes it out as SSE events.
        var res = ctx.Response;
        res.StatusCode = 200;
        res.ContentType = "text/event-stream; charset=utf-8";
        res.Headers.CacheControl = "no-cache";
        state.Streaming = true;
        var pieces = System.Threading.Channels.Channel.CreateUnbounded<string>(new() { SingleReader = true, SingleWriter = true });
        var pending = _worker.Enqueue(request, text => pieces.Writer.TryWrite(text), ended.Token);
        _ = pending.ContinueWith(_ => pieces.Writer.TryComplete(), TaskScheduler.Default);

        JsonObject Chunk(JsonObject choice)
        {
            var o = Envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, t, modelId);
            o["choices"] = new JsonArray(choice);
            return o;
        }
        TextResult final;
        try
        {
            if (chat) await WriteEvent(res, Chunk(new JsonObject { ["index"] = 0, ["delta"] = new JsonObject { ["role"] = "assistant", ["content"] = "" }, ["logprobs"] = null, ["finish_reason"] = null }));
            await foreach (var text in pieces.Reader.ReadAllAsync())
                await WriteEvent(res, Chunk(chat
                    ? new JsonObject { ["index"] = 0, ["delta"] = new JsonObject { ["content"] = text }, ["logprobs"] = null, ["finish_reason"] = null }
                    : new JsonObject { ["index"] = 0, ["text"] = text, ["logprobs"] = null, ["finish_reason"] = null }));
            final = await pending; // failures surface here and are sent as an error event
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !ctx.RequestAborted.IsCancellationRequested) { throw TimedOut(); }
        catch (Exception e) when (ctx.RequestAborted.IsCancellationRequested || e is IOException or ObjectDisposedException)
        {
            // The client hung up: stop generating for it.
            ended.Cancel();
            state.Summary = "client disconnected, ";
            try { await pending; } catch (Exception) { }
            return;
        }
        state.Summary = Summary(final, t);
        await WriteEvent(res, Chunk(chat
            ? new JsonObject { ["index"] = 0, ["delta"] = new JsonObject(), ["logprobs"] = null, ["finish_reason"] = final.FinishReason }
            : new JsonObject { ["index"] = 0, ["text"] = "", ["logprobs"] = null, ["finish_reason"] = final.FinishReason }));
        if (r.IncludeUsageInStream)
        {
            var u = Envelope(id, chat ? "chat.completion.chunk" : "text_completion", created, t, modelId);
            u["choices"] = new JsonArray();
            u["usage"] = Usage(final);
            await WriteEvent(res, u);
        }
        await WriteRaw(res, "data: [DONE]\n\n");
    }

    /// <summary>
    /// A request with several prompts or choices, echo, log-probabilities or max_tokens 0, run on the worker thread:
    /// every (prompt, choice) pair becomes one choice, index = prompt · n + choice, as OpenAI numbers them. Echoed
    /// prompt log-probabilities come from <see cref="OpenAiLogprobs.ScorePrompt"/> with the request's seed; a greedy
    /// one-token completion after it is read off the same forward pass (lm-evaluation-harness's log-likelihood
    /// request), other completions are generated by the runner, choice c with seed + c. Returns choices and usage.
    /// </summary>
    JsonObject RunChoices(OpenAiRequest r, List<int[]> prompts, TextRequest template, bool chat, CancellationToken cancel)
    {
        var tok = _runner.Tokenizer;
        var pieces = new OpenAiLogprobs.PieceText(tok);
        int n = r.N, k = r.Logprobs ?? 0;
        long seed = r.Seed ?? Random.Shared.NextInt64(1, long.MaxValue);
        int? t = _runner.EffectiveRecurrences(template);
        bool scorePrompt = !chat && r.Echo && r.Logprobs is not null;
        var scored = new (TokenLogprob?[] Prompt, TokenLogprob Next)?[prompts.Count];
        var results = new TextResult?[prompts.Count * n];
        var pending = new List<int>();
        for (int i = 0; i < prompts.Count; i++)
        {
            if (scorePrompt) scored[i] = OpenAiLogprobs.ScorePrompt(_runner.Model, prompts[i], t, seed, k, cancel);
            for (int c = 0; c < n; c++)
            {
                int slot = i * n + c;
                if (template.MaxTokens == 0) results[slot] = new TextResult("", prompts[i].Length, 0, "length", t, r.Logprobs is null ? null : []);
                else if (scored[i] is { } sc && template.MaxTokens == 1 && template.Sampling.Greedy) results[slot] = FromNext(prompts[i], sc.Next, template, t);
                else pending.Add(slot);
            }
        }
        TextRequest Row(int slot) => template with
        {
            PromptIds = prompts[slot / n],
            Sampling = r.Seed is long s0 ? template.Sampling with { Seed = s0 + slot % n } : template.Sampling,
        };
        // Greedy rows without a seed may share a batch (as concurrent requests do); seeded or sampled rows run alone
        // so that each reproduces what the same prompt and seed give in a request of its own.
        int chunk = template.Sampling.Greedy && r.Seed is null ? Math.Max(1, _o.MaxBatch) : 1;
        for (int at = 0; at < pending.Count; at += chunk)
        {
            var slots = pending.Skip(at).Take(chunk).ToList();
            var done = _runner.Run(slots.Select(Row).ToList(), cancel: cancel);
            for (int j = 0; j < slots.Count; j++) results[slots[j]] = done[j];
        }

        var choices = new JsonArray();
        long completionTokens = 0;
        for (int slot = 0; slot < results.Length; slot++)
        {
            var res = results[slot]!;
            int[] ids = prompts[slot / n];
            completionTokens += res.CompletionTokens;
            // Log-probability entries of the generated ids, each with its text where it stands after the prompt.
            var all = new List<int>(ids);
            var generated = new List<(string, TokenLogprob?, IReadOnlyList<string>)>();
            foreach (var g in res.Tokens ?? [])
            {
                // A chat reply reports only the tokens of its text, not the end-of-turn id that closed it.
                if (chat && generated.Count == res.CompletionTokens) break;
                generated.Add((pieces.Of(all, all.Count, g.Id), g, g.Top.Select(a => pieces.Of(all, all.Count, a.Id)).ToList()));
                all.Add(g.Id);
            }
            if (chat)
            {
                choices.Add(new JsonObject
                {
                    ["index"] = slot,
                    ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = res.Text },
                    ["logprobs"] = r.Logprobs is null ? null : OpenAiLogprobs.Chat([.. generated.Select(e => (e.Item1, e.Item2!, e.Item3))]),
                    ["finish_reason"] = res.FinishReason,
                });
                continue;
            }
            string echo = !r.Echo ? "" : r.Prompts[slot / n].Text ?? tok.Decode(ids);
            JsonObject? logprobs = null;
            if (r.Logprobs is not null)
            {
                var entries = new List<(string, TokenLogprob?, IReadOnlyList<string>)>();
                if (r.Echo)
                {
                    var prompt = scored[slot / n]!.Value.Prompt;
                    for (int p = 0; p < ids.Length; p++)
                        entries.Add((pieces.Of(ids, p, ids[p]), prompt[p], prompt[p]?.Top.Select(a => pieces.Of(ids, p, a.Id)).ToList() ?? []));
                }
                entries.AddRange(generated);
                logprobs = OpenAiLogprobs.Completion(entries, 0);
            }
            choices.Add(new JsonObject { ["index"] = slot, ["text"] = echo + res.Text, ["logprobs"] = logprobs, ["finish_reason"] = res.FinishReason });
        }
        long promptTokens = prompts.Sum(p => (long)p.Length);
        return new JsonObject
        {
            ["choices"] = choices,
            ["usage"] = new JsonObject { ["prompt_tokens"] = promptTokens, ["completion_tokens"] = completionTokens, ["total_tokens"] = promptTokens + completionTokens },
        };
    }

    /// <summary>
    /// The one-token greedy completion after a scored prompt, from the scoring pass's last position: what
    /// <see cref="ModelRunner.Run"/> returns for max_tokens 1 at the same T and seed, without a second pass over the prompt.
    /// </summary>
    TextResult FromNext(int[] prompt, TokenLogprob next, TextRequest request, int? t)
    {
        TokenLogprob[]? lp = request.Logprobs is null ? null : [next];
        if (_runner.StopIds.Contains(next.Id) || request.StopIds?.Contains(next.Id) == true)
            return new TextResult("", prompt.Length, 0, "stop", t, lp);
        var decoder = new StreamingDecoder(_runner.Tokenizer);
        if (request.Layout == TextLayout.ContinuesPrompt) decoder.Prime(prompt);
        var stops = new StopStringMatcher(request.StopStrings);
        string text = stops.Push(decoder.Push(next.Id) + decoder.Flush()) + stops.Flush();
        return new TextResult(text, prompt.Length, 1, stops.Stopped ? "stop" : "length", t, lp);
    }

    static string Summary(TextResult r, int? t) => $"{r.PromptTokens}+{r.CompletionTokens} tok{(t is int x ? $", T = {x}" : "")}, ";

    JsonObject Envelope(string id, string obj, long created, int? t, string model)
    {
        var o = new JsonObject { ["id"] = id, ["object"] = obj, ["created"] = created, ["model"] = model };
        if (t is int x) o["recurrences"] = x;
        return o;
    }

    static JsonObject Usage(TextResult r) => new()
    {
        ["prompt_tokens"] = r.PromptTokens, ["completion_tokens"] = r.CompletionTokens, ["total_tokens"] = r.PromptTokens + r.CompletionTokens,
    };

    async Task<byte[]> ReadBody(HttpRequest req)
    {
        if (req.ContentLength > _o.MaxBodyBytes)
            throw new ApiException(413, $"the request body is {req.ContentLength} bytes; the limit is {_o.MaxBodyBytes}", code: "request_too_large");
        using var ms = new MemoryStream();
        var buf = new byte[16384];
        int n;
        using var slow = CancellationTokenSource.CreateLinkedTokenSource(req.HttpContext.RequestAborted);
        slow.CancelAfter(_o.BodyTimeout);
        while ((n = await ReadSome(buf)) > 0)
        {
            ms.Write(buf, 0, n);
            if (ms.Length > _o.MaxBodyBytes) throw new ApiException(413, $"the request body exceeds the limit of {_o.MaxBodyBytes} bytes", code: "request_too_large");
        }
        return ms.ToArray();

        async Task<int> ReadSome(byte[] b)
        {
            try { return await req.Body.ReadAsync(b, slow.Token); }
            catch (OperationCanceledException) when (!req.HttpContext.RequestAborted.IsCancellationRequested)
            {
                throw new ApiException(408, $"the request body did not arrive within {_o.BodyTimeout.TotalSeconds:0} s", code: "request_timeout");
            }
        }
    }

    static Task WriteJson(HttpResponse res, int status, JsonNode body)
    {
        var bytes = Encoding.UTF8.GetBytes(body.ToJsonString(Json));
        res.StatusCode = status;
        res.ContentType = "application/json; charset=utf-8";
        res.ContentLength = bytes.Length;
        return res.Body.WriteAsync(bytes).AsTask();
    }

    static Task WriteEvent(HttpResponse res, JsonNode data) => WriteRaw(res, $"data: {data.ToJsonString(Json)}\n\n");

    static async Task WriteRaw(HttpResponse res, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        await res.Body.WriteAsync(bytes);
        await res.Body.FlushAsync();
    }

    static JsonObject ErrorBody(ApiException e) => new()
    {
        ["error"] = new JsonObject { ["message"] = e.Message, ["type"] = e.Type, ["param"] = e.Param, ["code"] = e.Code },
    };

    static async Task TryWriteError(HttpResponse res, ApiException e, ResponseState state)
    {
        try
        {
            // Once an event stream has started its status is sent; report the error as a last event instead.
            if (state.Streaming) await WriteEvent(res, ErrorBody(e));
            else if (!res.HasStarted) await WriteJson(res, e.Status, ErrorBody(e));
        }
        catch (Exception) { /* the client is gone */ }
    }
}
