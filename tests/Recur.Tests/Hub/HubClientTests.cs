using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Recur.Hub;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Hub;

/// <summary>
/// <see cref="HubClient"/> against a stand-in hub on 127.0.0.1 that speaks the Hugging Face layout: the
/// model listing, resolve URLs, an LFS file behind a redirect with X-Linked-Size / X-Linked-Etag, Range
/// requests, a missing repository and a transfer that breaks mid-file.
/// </summary>
public sealed class HubClientTests : IDisposable
{
    const string Repo = "acme/tiny";
    const string Commit = "0123456789abcdef0123456789abcdef01234567";

    sealed class FakeHub : IDisposable
    {
        public readonly Dictionary<string, byte[]> Files = new()
        {
            ["config.json"] = Encoding.UTF8.GetBytes("{\"model_type\": \"llama\"}"),
            ["model.safetensors"] = RandomBytes(200_000, 1),
            ["tokenizer.json"] = Encoding.UTF8.GetBytes("{\"model\": {}}"),
            ["sub/extra.bin"] = RandomBytes(3_000, 2),
        };
        public static readonly HashSet<string> Lfs = ["model.safetensors", "sub/extra.bin"];
        public readonly HashSet<string> DropFirstTransfer = [];
        public readonly HashSet<string> WrongSha = [];
        public int ServiceUnavailable; // answer the next N listing requests with 503
        public string? RedirectTo; // send LFS files here instead of the CDN route
        public readonly LoopbackHttpServer Server;

        public FakeHub() => Server = new LoopbackHttpServer(Handle);
        public void Dispose() => Server.Dispose();

        static byte[] RandomBytes(int n, int seed)
        {
            var b = new byte[n];
            new Random(seed).NextBytes(b);
            return b;
        }

        static string Sha(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));

        CannedReply Handle(SeenRequest r)
        {
            if (r.Path.StartsWith("/api/models/", StringComparison.Ordinal))
            {
                if (Interlocked.Decrement(ref ServiceUnavailable) >= 0) return CannedReply.Text(503, "busy");
                string rest = r.Path["/api/models/".Length..];
                if (rest.StartsWith("acme/private", StringComparison.Ordinal)) return CannedReply.Text(401, "{\"error\": \"unauthorized\"}");
                if (rest != Repo && !rest.StartsWith(Repo + "/revision/", StringComparison.Ordinal))
                    return CannedReply.Text(404, "{\"error\": \"Repository not found\"}", new Dictionary<string, string> { ["X-Error-Code"] = "RepoNotFound" });
                var listing = new { id = Repo, sha = Commit, siblings = Files.Keys.Select(k => new { rfilename = k }) };
                return CannedReply.Text(200, JsonSerializer.Serialize(listing), new Dictionary<string, string> { ["Content-Type"] = "application/json" });
            }
            string resolve = $"/{Repo}/resolve/{Commit}/";
            if (r.Path.StartsWith(resolve, StringComparison.Ordinal))
            {
                string file = Uri.UnescapeDataString(r.Path[resolve.Length..]);
                if (!Files.TryGetValue(file, out var bytes))
                    return CannedReply.Text(404, "Entry not found", new Dictionary<string, string> { ["X-Error-Code"] = "EntryNotFound" });
                if (Lfs.Contains(file))
                {
                    // As the hub does for LFS files: metadata here, bytes from a CDN behind a redirect.
                    string sha = WrongSha.Contains(file) ? new string('0', 64) : Sha(bytes);
                    return new CannedReply(302, [], new Dictionary<string, string>
                    {
                        ["Location"] = RedirectTo ?? "/cdn/" + Uri.EscapeDataString(file), ["X-Linked-Size"] = bytes.Length.ToString(), ["X-Linked-Etag"] = $"\"{sha}\"",
                    });
                }
                return Body(r, file, bytes, new Dictionary<string, string> { ["ETag"] = "\"4f0a9c2e1b3d5f7a9c2e4f6a8b0d2f4a6c8e0a2b\"" });
            }
            if (r.Path.StartsWith("/cdn/", StringComparison.Ordinal))
            {
                string file = Uri.UnescapeDataString(r.Path["/cdn/".Length..]);
                return Body(r, file, Files[file], new Dictionary<string, string> { ["ETag"] = "\"cdn-object-7\"" });
            }
            return CannedReply.Text(404, "no route");
        }

        CannedReply Body(SeenRequest r, string file, byte[] bytes, Dictionary<string, string> headers)
        {
            int from = 0;
            if (r.Headers.TryGetValue("range", out var range))
            {
                from = int.Parse(range["bytes=".Length..].TrimEnd('-'));
                if (from >= bytes.Length) return new CannedReply(416, [], new Dictionary<string, string> { ["Content-Range"] = $"bytes */{bytes.Length}" });
                headers["Content-Range"] = $"bytes {from}-{bytes.Length - 1}/{bytes.Length}";
            }
            var body = bytes[from..];
            bool drop;
            lock (DropFirstTransfer) drop = DropFirstTransfer.Remove(file);
            return new CannedReply(from > 0 ? 206 : 200, body, headers, drop ? body.Length / 2 : null);
        }
    }

    readonly FakeHub _hub = new();
    readonly string _out = Path.Combine(TestModels.TempDir("recur-hub"), "model");

    public void Dispose() => _hub.Dispose();

    HubClient Client(int retries = 2, string? token = null) => new(new HubOptions
    {
        Endpoint = _hub.Server.BaseAddress.ToString(), Token = token, MaxRetries = retries,
        RetryDelay = TimeSpan.FromMilliseconds(10), ReadTimeout = TimeSpan.FromSeconds(10),
    });

    void AssertFile(string name) => Assert.Equal(_hub.Files[name], File.ReadAllBytes(Path.Combine(_out, name)));

    int FileRequests(string name) => _hub.Server.Requests.Count(r => r.Path.EndsWith("/" + name, StringComparison.Ordinal) || r.Path.EndsWith("/" + Uri.EscapeDataString(name), StringComparison.Ordinal));

    [Fact]
    public async Task Full_download_gives_identical_files_and_sends_the_token()
    {
        using var client = Client(token: "hf_secret");
        var result = await client.DownloadAsync(Repo, _out);
        Assert.Equal(Commit, result.Commit);
        Assert.Equal(_hub.Files.Keys.Order(), result.Downloaded.Order());
        foreach (var name in _hub.Files.Keys) AssertFile(name);
        Assert.Empty(Directory.GetFiles(_out, "*.incomplete", SearchOption.AllDirectories));
        Assert.Equal(_hub.Files.Values.Sum(b => (long)b.Length), result.BytesDownloaded);
        Assert.All(_hub.Server.Requests, r => Assert.Equal("Bearer hf_secret", r.Headers["authorization"]));
        Assert.Contains(_hub.Server.Requests, r => r.Path == $"/{Repo}/resolve/{Commit}/sub/extra.bin");

        // A rerun finds everything in place and fetches no file again.
        int before = _hub.Server.Requests.Count;
        var again = await client.DownloadAsync(Repo, _out);
        Assert.Empty(again.Downloaded);
        Assert.Equal(4, again.UpToDate.Count);
        Assert.Equal(before + 1, _hub.Server.Requests.Count); // the listing only
    }

    [Fact]
    public async Task Include_globs_select_files()
    {
        using var client = Client();
        var result = await client.DownloadAsync(Repo, _out, include: ["*.json"]);
        Assert.Equal(["config.json", "tokenizer.json"], result.Downloaded.Order());
        Assert.False(File.Exists(Path.Combine(_out, "model.safetensors")));
        var sub = await client.DownloadAsync(Repo, _out, include: ["sub/"]);
        Assert.Equal(["sub/extra.bin"], sub.Downloaded);
        var e = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync(Repo, _out, include: ["*.gguf"]));
        Assert.Contains("matches include: *.gguf", e.Message);
        Assert.Contains("matches --include *.gguf", Recur.Cli.Common.Describe(e));

        Assert.True(HubClient.GlobMatch("*.safetensors", "model-00001-of-00002.safetensors"));
        Assert.True(HubClient.GlobMatch("*.safetensors", "onnx/model.safetensors")); // '*' crosses '/', as fnmatch
        Assert.True(HubClient.GlobMatch("config.json", "config.json"));
        Assert.False(HubClient.GlobMatch("config.json", "generation_config.json"));
        Assert.True(HubClient.GlobMatch("model-0000[12]-*", "model-00002-of-00002.safetensors"));
        Assert.False(HubClient.GlobMatch("model-0000[!12]-*", "model-00002-of-00002.safetensors"));
        Assert.True(HubClient.GlobMatch("tokenizer.?son", "tokenizer.json"));
    }

    [Fact]
    public async Task A_broken_transfer_resumes_with_a_range_request_in_the_same_run()
    {
        lock (_hub.DropFirstTransfer) _hub.DropFirstTransfer.Add("model.safetensors");
        using var client = Client(retries: 2);
        var result = await client.DownloadAsync(Repo, _out, include: ["model.safetensors"]);
        AssertFile("model.safetensors");
        var cdn = _hub.Server.Requests.Where(r => r.Path == "/cdn/model.safetensors").ToList();
        Assert.Equal(2, cdn.Count);
        Assert.False(cdn[0].Headers.ContainsKey("range"));
        long half = _hub.Files["model.safetensors"].Length / 2;
        Assert.Equal($"bytes={half}-", cdn[1].Headers["range"]);
        Assert.Equal(_hub.Files["model.safetensors"].Length, result.BytesDownloaded); // each byte once
    }

    [Fact]
    public async Task An_interrupted_download_leaves_an_incomplete_file_that_a_rerun_resumes()
    {
        lock (_hub.DropFirstTransfer) _hub.DropFirstTransfer.Add("model.safetensors");
        using (var once = Client(retries: 0))
        {
            var e = await Assert.ThrowsAsync<RecurUserException>(() => once.DownloadAsync(Repo, _out));
            Assert.Contains("network error while downloading model.safetensors", e.Message);
            Assert.Contains("rerun", e.Message);
        }
        string partial = Path.Combine(_out, "model.safetensors.incomplete");
        long half = _hub.Files["model.safetensors"].Length / 2;
        Assert.Equal(half, new FileInfo(partial).Length);
        Assert.False(File.Exists(Path.Combine(_out, "model.safetensors")));
        AssertFile("config.json"); // finished before the break, kept

        using var client = Client(retries: 0);
        var result = await client.DownloadAsync(Repo, _out);
        foreach (var name in _hub.Files.Keys) AssertFile(name);
        Assert.False(File.Exists(partial));
        Assert.Contains("config.json", result.UpToDate);
        Assert.Equal($"bytes={half}-", _hub.Server.Requests.Last(r => r.Path == "/cdn/model.safetensors").Headers["range"]);
    }

    [Fact]
    public async Task A_sha256_mismatch_is_detected_and_nothing_is_kept()
    {
        _hub.WrongSha.Add("sub/extra.bin");
        using var client = Client();
        var e = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync(Repo, _out, include: ["sub/*"]));
        Assert.Contains("sha256 mismatch", e.Message);
        Assert.Contains("sub/extra.bin", e.Message);
        Assert.False(File.Exists(Path.Combine(_out, "sub", "extra.bin")));
        Assert.False(File.Exists(Path.Combine(_out, "sub", "extra.bin.incomplete")));
    }

    [Fact]
    public async Task Missing_repositories_files_and_denied_access_give_one_clear_line()
    {
        using var client = Client();
        var missing = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync("acme/missing", _out));
        Assert.Contains("repository acme/missing not found", missing.Message);
        Assert.DoesNotContain('\n', missing.Message);
        var denied = await Assert.ThrowsAsync<RecurUserException>(() => client.GetRepoInfoAsync("acme/private"));
        Assert.Contains("HF_TOKEN", denied.Message);
        var file = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadFileAsync(Repo, Commit, "nope.bin", Path.Combine(_out, "nope.bin")));
        Assert.Contains("file 'nope.bin' not found in acme/tiny", file.Message);
        Assert.Contains("OWNER/NAME", (await Assert.ThrowsAsync<RecurUserException>(() => client.GetRepoInfoAsync("../etc"))).Message);
        Assert.False(Directory.Exists(_out) && Directory.EnumerateFileSystemEntries(_out).Any());
    }

    [Fact]
    public async Task Files_from_elsewhere_are_only_overwritten_with_force()
    {
        Directory.CreateDirectory(_out);
        File.WriteAllText(Path.Combine(_out, "config.json"), "mine");
        using var client = Client();
        var e = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync(Repo, _out));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("pass force: true to overwrite them", e.Message);
        Assert.Contains("pass --force to overwrite them", Recur.Cli.Common.Describe(e));
        var empty = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync(Repo, _out, revision: " "));
        Assert.Equal(("revision is empty; expected a branch, tag or commit", "--revision is empty; expected a branch, tag or commit"),
            (empty.Message, Recur.Cli.Common.Describe(empty)));
        Assert.Equal("mine", File.ReadAllText(Path.Combine(_out, "config.json")));
        Assert.DoesNotContain(_hub.Server.Requests, r => r.Path.Contains("/resolve/"));

        await client.DownloadAsync(Repo, _out, force: true);
        foreach (var name in _hub.Files.Keys) AssertFile(name);
    }

    [Fact]
    public async Task Server_errors_are_retried_a_bounded_number_of_times()
    {
        _hub.ServiceUnavailable = 2;
        using (var patient = Client(retries: 2))
            Assert.Equal(4, (await patient.GetRepoInfoAsync(Repo)).Files.Count);
        Assert.Equal(3, _hub.Server.Requests.Count);

        _hub.ServiceUnavailable = 5;
        using var impatient = Client(retries: 1);
        var e = await Assert.ThrowsAsync<RecurUserException>(() => impatient.GetRepoInfoAsync(Repo));
        Assert.Contains("after 2 attempt(s): HTTP 503", e.Message);
        Assert.Equal(5, _hub.Server.Requests.Count);
    }

    [Fact]
    public void Options_come_from_HF_ENDPOINT_and_HF_TOKEN()
    {
        var env = new Dictionary<string, string> { ["HF_ENDPOINT"] = "http://127.0.0.1:9", ["HF_TOKEN"] = " hf_abc " };
        var o = HubOptions.FromEnvironment(k => env.GetValueOrDefault(k));
        Assert.Equal(("http://127.0.0.1:9", "hf_abc"), (o.Endpoint, o.Token));
        var d = HubOptions.FromEnvironment(_ => null);
        Assert.Equal((HubOptions.DefaultEndpoint, (string?)null), (d.Endpoint, d.Token));
        Assert.Contains("HF_ENDPOINT", Assert.Throws<RecurUserException>(() => new HubClient(new HubOptions { Endpoint = "ftp://x" })).Message);
        Assert.Equal("ab" + new string('c', 62), HubClient.Sha256FromEtag("W/\"AB" + new string('C', 62) + "\""));
        Assert.Null(HubClient.Sha256FromEtag("\"4f0a9c2e1b3d5f7a9c2e4f6a8b0d2f4a6c8e0a2b\"")); // a git blob id, not a sha256
    }

    [Fact]
    public async Task A_redirect_off_the_web_is_refused_with_one_line()
    {
        _hub.RedirectTo = "file:///etc/passwd";
        using var client = Client();
        var e = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync(Repo, _out));
        Assert.Contains("file:///etc/passwd", e.Message);
        Assert.Contains("not an http(s) URL", e.Message);
    }

    [Fact]
    public async Task A_repository_file_named_like_the_download_record_is_refused()
    {
        _hub.Files[HubClient.ManifestName] = Encoding.UTF8.GetBytes("{}");
        using var client = Client();
        var e = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync(Repo, _out));
        Assert.Contains(HubClient.ManifestName, e.Message);
        Assert.Contains("leave it out with an include: pattern", e.Message);
        Assert.Contains("leave it out with an --include pattern", Recur.Cli.Common.Describe(e));
    }

    [Fact]
    public void The_stall_limit_and_retry_budget_are_short_by_default_and_configurable()
    {
        var d = HubOptions.FromEnvironment(_ => null);
        // A stalled transfer gives up after (retries + 1) × read timeout plus the waits: ~1.5 min, not 6.5.
        Assert.True((d.MaxRetries + 1) * d.ReadTimeout.TotalSeconds + 7 <= 120, $"{d.MaxRetries} retries × {d.ReadTimeout}");
        var env = new Dictionary<string, string> { ["RECUR_HUB_RETRIES"] = "1", ["RECUR_HUB_READ_TIMEOUT"] = "5" };
        var o = HubOptions.FromEnvironment(k => env.GetValueOrDefault(k));
        Assert.Equal((1, TimeSpan.FromSeconds(5)), (o.MaxRetries, o.ReadTimeout));
        Assert.Contains("RECUR_HUB_RETRIES", Assert.Throws<RecurUserException>(() => HubOptions.FromEnvironment(k => k == "RECUR_HUB_RETRIES" ? "lots" : null)).Message);
        Assert.Contains("RECUR_HUB_READ_TIMEOUT", Assert.Throws<RecurUserException>(() => HubOptions.FromEnvironment(k => k == "RECUR_HUB_READ_TIMEOUT" ? "0" : null)).Message);
    }

    [Fact]
    public async Task An_unresolvable_hub_fails_at_once_and_names_HF_ENDPOINT()
    {
        // .invalid never resolves (RFC 6761); five retries with a 1 s base would wait 31 s before giving up.
        var client = new HubClient(new HubOptions { Endpoint = "http://recur-test-hub.invalid", MaxRetries = 5, RetryDelay = TimeSpan.FromSeconds(1) });
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<RecurUserException>(() => client.DownloadAsync("org/model", _out));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"took {sw.Elapsed.TotalSeconds:0.0} s");
        Assert.Contains("cannot resolve", e.Message);
        Assert.Contains("HF_ENDPOINT", e.Message);
    }
}
