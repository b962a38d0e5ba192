using System.Net;
using System.Runtime.CompilerServices;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Recur.Checkpoints;

namespace Recur.Hub;

/// <summary>Where the hub is and how patiently to talk to it.</summary>
public sealed record HubOptions
{
    public const string DefaultEndpoint = "https://huggingface.co";

    /// <summary>Base URL of the hub (HF_ENDPOINT), without a trailing slash.</summary>
    public string Endpoint { get; init; } = DefaultEndpoint;
    /// <summary>Access token sent as <c>Authorization: Bearer</c> (HF_TOKEN); null for public repositories.</summary>
    public string? Token { get; init; }
    /// <summary>Retries after a network error, a 5xx or a 429, per request; the wait doubles from <see cref="RetryDelay"/> up to 30 s (RECUR_HUB_RETRIES).</summary>
    public int MaxRetries { get; init; } = 3;
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(1);
    /// <summary>
    /// Longest wait for response headers or for the next bytes of a body (RECUR_HUB_READ_TIMEOUT, seconds). A
    /// stalled download gives up after (retries + 1) × this plus the waits between: about 1.5 min by default.
    /// </summary>
    public TimeSpan ReadTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Reads HF_ENDPOINT and HF_TOKEN (or the older HUGGING_FACE_HUB_TOKEN), as huggingface_hub does.</summary>
    public static HubOptions FromEnvironment(Func<string, string?>? getenv = null)
    {
        getenv ??= Environment.GetEnvironmentVariable;
        string? token = getenv("HF_TOKEN") ?? getenv("HUGGING_FACE_HUB_TOKEN");
        var o = new HubOptions
        {
            Endpoint = getenv("HF_ENDPOINT") is { Length: > 0 } e ? e : DefaultEndpoint,
            Token = string.IsNullOrWhiteSpace(token) ? null : token.Trim(),
        };
        if (getenv("RECUR_HUB_RETRIES") is { Length: > 0 } retries)
            o = o with { MaxRetries = int.TryParse(retries, out int n) && n is >= 0 and <= 100 ? n : throw new RecurUserException($"RECUR_HUB_RETRIES must be an integer from 0 to 100 (got '{retries}')") };
        if (getenv("RECUR_HUB_READ_TIMEOUT") is { Length: > 0 } seconds)
            o = o with { ReadTimeout = double.TryParse(seconds, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double s) && s is >= 1 and <= 3600
                ? TimeSpan.FromSeconds(s) : throw new RecurUserException($"RECUR_HUB_READ_TIMEOUT must be a number of seconds from 1 to 3600 (got '{seconds}')") };
        return o;
    }
}

/// <summary>A file of a repository as the hub lists it; size and SHA-256 are known when the listing carries LFS metadata.</summary>
public sealed record RepoFile(string Path, long? Size = null, string? Sha256 = null);

/// <summary>A repository at a revision: the commit it resolved to (when the hub says) and its files.</summary>
public sealed record RepoInfo(string Repo, string Revision, string? Sha, IReadOnlyList<RepoFile> Files);

/// <summary>What a folder download did.</summary>
public sealed record DownloadResult(string Repo, string Revision, string? Commit, string Folder, IReadOnlyList<string> Downloaded, IReadOnlyList<string> UpToDate, long BytesDownloaded);

/// <summary>Receives download events, e.g. to draw progress bars. Called from the downloading task.</summary>
public interface IDownloadProgress
{
    void Started(string file, long? totalBytes, long resumedFrom);
    void Advanced(string file, long bytesDone);
    void Finished(string file, long bytes);
    void UpToDate(string file);
    void Retrying(string what, int attempt, TimeSpan delay, string reason);
}

/// <summary>
/// Downloads model repositories over the Hugging Face hub's HTTP layout: the listing from
/// <c>GET {endpoint}/api/models/{repo}[/revision/{rev}]</c> (<c>sha</c>, <c>siblings[].rfilename</c>) and each file
/// from <c>GET {endpoint}/{repo}/resolve/{rev}/{path}</c>. Files arrive in <c>path.incomplete</c>, resume with
/// <c>Range</c> after an interruption (in the same run after a retry, or on a rerun), are checked against the
/// size and, for LFS files, the SHA-256 the hub announces (<c>X-Linked-Size</c>, <c>X-Linked-Etag</c>), and only
/// then take their final name. Every failure a user can act on is a one-line <see cref="RecurUserException"/>.
/// </summary>
public sealed partial class HubClient : IDisposable
{
    /// <summary>Bookkeeping of which repository and commit each file of a folder came from; lets reruns skip finished files.</summary>
    public const string ManifestName = ".recur-download.json";

    readonly HubOptions _o;
    readonly HttpClient _http;
    readonly Uri _endpoint;

    public HubClient(HubOptions options, HttpMessageHandler? handler = null)
    {
        _o = options;
        if (!Uri.TryCreate(options.Endpoint.TrimEnd('/'), UriKind.Absolute, out var endpoint) || endpoint.Scheme is not ("http" or "https"))
            throw new RecurUserException($"HF_ENDPOINT '{options.Endpoint}' is not an http(s) URL");
        _endpoint = endpoint;
        // Redirects are followed by hand: the hub answers LFS files with a redirect to a CDN whose first
        // response carries X-Linked-Size / X-Linked-Etag, and the token must not travel to another host.
        handler ??= new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            ConnectTimeout = TimeSpan.FromSeconds(30),
        };
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("recur/0.1");
    }

    public void Dispose() => _http.Dispose();

    string Base => _endpoint.ToString().TrimEnd('/');

    // ---- names and patterns ----

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")]
    private static partial Regex RepoIdPattern();

    /// <summary>Throws unless <paramref name="repo"/> looks like <c>OWNER/NAME</c> (or a bare legacy NAME).</summary>
    public static void ValidateRepoId(string repo)
    {
        if (!RepoIdPattern().IsMatch(repo) || repo.Contains("..") || repo.Length > 200)
            throw new RecurUserException($"'{repo}' is not a repository id; expected OWNER/NAME, e.g. TinyLlama/TinyLlama-1.1B-Chat-v1.0");
    }

    /// <summary>
    /// Shell-style match of a repository path, as huggingface_hub's <c>allow_patterns</c>: <c>*</c> matches any
    /// run of characters including <c>/</c>, <c>?</c> one character, <c>[abc]</c> / <c>[!abc]</c> a set; a pattern
    /// ending in <c>/</c> matches everything under that folder.
    /// </summary>
    public static bool GlobMatch(string pattern, string path)
    {
        if (pattern.EndsWith('/')) pattern += "*";
        var re = new System.Text.StringBuilder("^");
        for (int i = 0; i < pattern.Length; i++)
        {
            char c = pattern[i];
            if (c == '*') re.Append(".*");
            else if (c == '?') re.Append('.');
            else if (c == '[' && pattern.IndexOf(']', i + 2) is int close and > 0)
            {
                string set = pattern[(i + 1)..close];
                re.Append('[').Append(set.StartsWith('!') ? "^" + Regex.Escape(set[1..]) : Regex.Escape(set)).Append(']');
                i = close;
            }
            else re.Append(Regex.Escape(c.ToString()));
        }
        return Regex.IsMatch(path, re.Append('$').ToString(), RegexOptions.Singleline | RegexOptions.CultureInvariant);
    }

    static bool IsSafeRelativePath(string path) =>
        path.Length > 0 && !path.StartsWith('/') && !path.Contains('\\') && !path.Contains(':')
        && path.Split('/').All(p => p.Length > 0 && p != "." && p != "..");

    // ---- HTTP with retries and manual redirects ----

    sealed class TransientException(string message) : Exception(message)
    {
        public TimeSpan? RetryAfter { get; init; }
    }

    async Task<T> WithRetries<T>(string what, Func<Task<T>> attempt, IDownloadProgress? progress, CancellationToken ct)
    {
        for (int n = 0; ; n++)
        {
            string reason;
            TimeSpan? retryAfter = null;
            try { return await attempt().ConfigureAwait(false); }
            catch (TransientException e) { reason = e.Message; retryAfter = e.RetryAfter; }
            catch (HttpRequestException e) when (IsNameResolution(e))
            {
                // No amount of retrying resolves a name the resolver does not know (offline, a typo in HF_ENDPOINT, a
                // blocked hub): fail now rather than after the whole back-off.
                throw new RecurUserException($"cannot resolve the hub's host name '{_o.Endpoint}' while downloading {what}: {e.Message}. " +
                    "Check the network, or point HF_ENDPOINT at a reachable hub or mirror (e.g. HF_ENDPOINT=https://hf-mirror.com)", e);
            }
            catch (HttpRequestException e) { reason = e.Message; }
            catch (IOException e) { reason = e.Message; }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested) { reason = $"no data for {_o.ReadTimeout.TotalSeconds:0} s"; }
            if (n >= _o.MaxRetries)
                throw new RecurUserException($"network error while downloading {what} after {n + 1} attempt(s): {reason}; rerun the same command to resume");
            var delay = retryAfter ?? TimeSpan.FromTicks(Math.Min(_o.RetryDelay.Ticks * (1L << Math.Min(n, 20)), TimeSpan.FromSeconds(30).Ticks));
            progress?.Retrying(what, n + 1, delay, reason);
            await Task.Delay(delay, ct).ConfigureAwait(false);
        }
    }

    static bool IsNameResolution(HttpRequestException e) =>
        e.HttpRequestError == HttpRequestError.NameResolutionError
        || e.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.HostNotFound or System.Net.Sockets.SocketError.TryAgain or System.Net.Sockets.SocketError.NoData };

    /// <summary>Sends a GET, following up to 10 redirects; the token goes only to the hub's own host.</summary>
    async Task<(HttpResponseMessage Response, HttpResponseHeaders FirstHeaders)> Get(Uri url, long? rangeFrom, CancellationToken ct)
    {
        HttpResponseHeaders? first = null;
        for (int hop = 0; hop <= 10; hop++)
        {
            using var req = new HttpRequestMessage(HttpMethod.Get, url);
            if (_o.Token is not null && SameOrigin(url, _endpoint)) req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _o.Token);
            if (rangeFrom is long from) req.Headers.Range = new RangeHeaderValue(from, null);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(_o.ReadTimeout);
            var res = await _http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            first ??= res.Headers;
            int code = (int)res.StatusCode;
            if (code is 301 or 302 or 303 or 307 or 308 && res.Headers.Location is { } location)
            {
                url = location.IsAbsoluteUri ? location : new Uri(url, location);
                res.Dispose();
                // HttpClient would throw NotSupportedException; a redirect off the web (file://, ftp://) is refused.
                if (url.Scheme is not ("http" or "https"))
                    throw new RecurUserException($"the server redirected to '{url}', which is not an http(s) URL; refusing to follow it");
                continue;
            }
            if (code >= 500 || code == 429)
            {
                var after = res.Headers.RetryAfter?.Delta;
                res.Dispose();
                throw new TransientException($"HTTP {code} from {url.Host}") { RetryAfter = after is { } a && a < TimeSpan.FromMinutes(2) ? a : null };
            }
            return (res, first);
        }
        throw new RecurUserException($"too many redirects while fetching {url}");
    }

    static bool SameOrigin(Uri a, Uri b) => a.Scheme == b.Scheme && a.IdnHost == b.IdnHost && a.Port == b.Port;

    static string HubError(HttpResponseMessage res) =>
        res.Headers.TryGetValues("X-Error-Code", out var v) ? v.FirstOrDefault() ?? "" : "";

    RecurUserException AccessError(string repo, HttpResponseMessage res)
    {
        string code = HubError(res);
        if (code == "GatedRepo")
            return new($"{repo} is gated: accept its terms on {Base}/{repo} and set HF_TOKEN to a token of that account");
        return _o.Token is null
            ? new($"access to {repo} denied (HTTP {(int)res.StatusCode}) by {Base}: the repository is private, gated or does not exist; set HF_TOKEN to a token that can read it")
            : new($"access to {repo} denied (HTTP {(int)res.StatusCode}) by {Base}: the token in HF_TOKEN cannot read it, or the repository does not exist");
    }

    // ---- listing ----

    /// <summary>Lists <paramref name="repo"/> at <paramref name="revision"/> (branch, tag or commit).</summary>
    public async Task<RepoInfo> GetRepoInfoAsync(string repo, string revision = "main", CancellationToken ct = default, IDownloadProgress? progress = null)
    {
        ValidateRepoId(repo);
        if (string.IsNullOrWhiteSpace(revision)) throw RecurUserException.About("revision is empty; expected a branch, tag or commit", "revision");
        var url = new Uri(revision == "main" ? $"{Base}/api/models/{repo}" : $"{Base}/api/models/{repo}/revision/{Uri.EscapeDataString(revision)}");
        string json = await WithRetries($"the file list of {repo}", async () =>
        {
            var (res, _) = await Get(url, null, ct).ConfigureAwait(false);
            using (res)
            {
                int code = (int)res.StatusCode;
                if (code == 404)
                    throw HubError(res) == "RevisionNotFound"
                        ? new RecurUserException($"revision '{revision}' not found in {repo} on {Base}")
                        : new RecurUserException($"repository {repo} not found on {Base} (check OWNER/NAME; a private repository also needs HF_TOKEN)");
                if (code is 401 or 403) throw AccessError(repo, res);
                if (code != 200) throw new RecurUserException($"{url}: unexpected HTTP {code} {res.ReasonPhrase}");
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(_o.ReadTimeout);
                return await res.Content.ReadAsStringAsync(timeout.Token).ConfigureAwait(false);
            }
        }, progress, ct).ConfigureAwait(false);
        return ParseInfo(repo, revision, json, url);
    }

    static RepoInfo ParseInfo(string repo, string revision, string json, Uri url)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("siblings", out var siblings) || siblings.ValueKind != JsonValueKind.Array)
                throw new RecurUserException($"{url}: the answer has no \"siblings\" list; is HF_ENDPOINT a Hugging Face hub?");
            string? sha = root.TryGetProperty("sha", out var s) && s.ValueKind == JsonValueKind.String ? s.GetString() : null;
            var files = new List<RepoFile>();
            foreach (var f in siblings.EnumerateArray())
            {
                if (f.ValueKind != JsonValueKind.Object || !f.TryGetProperty("rfilename", out var name) || name.ValueKind != JsonValueKind.String)
                    throw new RecurUserException($"{url}: a sibling has no \"rfilename\" string");
                long? size = f.TryGetProperty("size", out var sz) && sz.ValueKind == JsonValueKind.Number ? sz.GetInt64() : null;
                string? sha256 = null;
                if (f.TryGetProperty("lfs", out var lfs) && lfs.ValueKind == JsonValueKind.Object)
                {
                    if (lfs.TryGetProperty("sha256", out var h) && h.ValueKind == JsonValueKind.String) sha256 = h.GetString();
                    if (lfs.TryGetProperty("size", out var ls) && ls.ValueKind == JsonValueKind.Number) size = ls.GetInt64();
                }
                files.Add(new RepoFile(name.GetString()!, size, sha256));
            }
            return new RepoInfo(repo, revision, sha, files);
        }
        catch (JsonException e)
        {
            throw new RecurUserException($"{url}: the answer is not valid JSON ({e.Message}); is HF_ENDPOINT a Hugging Face hub?", e);
        }
    }

    // ---- one file ----

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Pattern();

    /// <summary>The SHA-256 an ETag names, when it is one (LFS files); git blob ids (40 hex) and others give null.</summary>
    public static string? Sha256FromEtag(string? etag)
    {
        if (etag is null) return null;
        string e = etag.Trim();
        if (e.StartsWith("W/", StringComparison.Ordinal)) e = e[2..];
        e = e.Trim('"').ToLowerInvariant();
        return Sha256Pattern().IsMatch(e) ? e : null;
    }

    /// <summary>
    /// Downloads one file of a repository to <paramref name="destination"/>, resuming from
    /// <c>destination.incomplete</c> when it exists. <paramref name="expected"/> may carry the size and SHA-256
    /// from the listing; the response headers can supply them too. Returns the bytes transferred in this call.
    /// </summary>
    public async Task<long> DownloadFileAsync(string repo, string revision, string file, string destination, RepoFile? expected = null,
        IDownloadProgress? progress = null, CancellationToken ct = default)
    {
        ValidateRepoId(repo);
        if (!IsSafeRelativePath(file)) throw new RecurUserException($"{repo}: refusing the file name '{file}' (absolute or with '..')");
        string partial = destination + ".incomplete";
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(destination))!);
        var url = new Uri($"{Base}/{repo}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', file.Split('/').Select(Uri.EscapeDataString))}");
        var transferred = new StrongBox<long>(0); // counts bytes of failed attempts too
        bool restartedAfterMismatch = false;
        while (true)
        {
            var outcome = await WithRetries(file, () => Attempt(repo, file, url, partial, expected, progress, transferred, ct), progress, ct).ConfigureAwait(false);
            if (outcome.Mismatch is null)
            {
                File.Move(partial, destination, overwrite: true);
                progress?.Finished(file, new FileInfo(destination).Length);
                return transferred.Value;
            }
            File.Delete(partial);
            // A resumed download may have started from stale bytes (another revision, a bad disk): one fresh try.
            if (outcome.Resumed && !restartedAfterMismatch) { restartedAfterMismatch = true; continue; }
            throw new RecurUserException($"{outcome.Mismatch} for {file} of {repo}; the download was discarded, rerun to fetch it again");
        }
    }

    sealed record AttemptOutcome(bool Resumed, string? Mismatch);

    async Task<AttemptOutcome> Attempt(string repo, string file, Uri url, string partial, RepoFile? expected, IDownloadProgress? progress,
        StrongBox<long> transferred, CancellationToken ct)
    {
        long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
        var (res, first) = await Get(url, have > 0 ? have : null, ct).ConfigureAwait(false);
        using (res)
        {
            int code = (int)res.StatusCode;
            if (code == 404) throw new RecurUserException(HubError(res) is "RepoNotFound"
                ? $"repository {repo} not found on {Base}"
                : $"file '{file}' not found in {repo} (HTTP 404 from {url})");
            if (code is 401 or 403) throw AccessError(repo, res);
            long? total = Header(first, "X-Linked-Size") is string ls && long.TryParse(ls, out long linked) ? linked : expected?.Size;
            if (code == 416)
            {
                // Nothing past the partial file: it is either complete already or longer than the file now is.
                long? whole = res.Content.Headers.ContentRange?.Length ?? total;
                if (whole == have) return await Verify(resumed: true).ConfigureAwait(false);
                File.Delete(partial);
                throw new TransientException($"the partial file of {file} did not match the server's; starting over");
            }
            if (code is not (200 or 206)) throw new RecurUserException($"{url}: unexpected HTTP {code} {res.ReasonPhrase}");

            bool append = false;
            if (code == 206)
            {
                var range = res.Content.Headers.ContentRange;
                if (range?.From != have)
                {
                    File.Delete(partial);
                    throw new TransientException($"the server resumed {file} at {range?.From} instead of {have}; starting over");
                }
                append = true;
                total ??= range.Length;
            }
            else
            {
                have = 0; // a full answer: the server ignored Range, or there was nothing to resume
                total ??= res.Content.Headers.ContentLength;
            }

            progress?.Started(file, total, have);
            long got = 0;
            using (var output = new FileStream(partial, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                using var body = await res.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
                var buffer = new byte[1 << 16];
                using var idle = CancellationTokenSource.CreateLinkedTokenSource(ct);
                while (true)
                {
                    idle.CancelAfter(_o.ReadTimeout);
                    int n = await body.ReadAsync(buffer, idle.Token).ConfigureAwait(false);
                    if (n == 0) break;
                    await output.WriteAsync(buffer.AsMemory(0, n), ct).ConfigureAwait(false);
                    got += n;
                    transferred.Value += n;
                    progress?.Advanced(file, have + got);
                }
                output.Flush(flushToDisk: true);
            }
            return await Verify(append).ConfigureAwait(false);

            async Task<AttemptOutcome> Verify(bool resumed)
            {
                long size = new FileInfo(partial).Length;
                if (total is long t && size < t) throw new TransientException($"the transfer of {file} ended at {size} of {t} bytes");
                if (total is long t2 && size > t2) return new(resumed, $"size mismatch ({size} bytes, the server announced {t2})");
                string? want = Sha256FromEtag(Header(first, "X-Linked-Etag")) ?? Sha256FromEtag(first.ETag?.Tag) ?? expected?.Sha256?.ToLowerInvariant();
                if (want is not null)
                {
                    string got256 = await HashFile(partial, ct).ConfigureAwait(false);
                    if (got256 != want) return new(resumed, $"sha256 mismatch (expected {want}, got {got256})");
                }
                return new(resumed, null);
            }
        }
    }

    static string? Header(HttpResponseHeaders h, string name) =>
        h.TryGetValues(name, out var v) ? v.FirstOrDefault() : null;

    static async Task<string> HashFile(string path, CancellationToken ct)
    {
        using var sha = SHA256.Create();
        await using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, useAsync: true);
        return Convert.ToHexStringLower(await sha.ComputeHashAsync(f, ct).ConfigureAwait(false));
    }

    // ---- a folder ----

    sealed record ManifestEntry(string Repo, string Commit, long Size);

    /// <summary>
    /// Downloads the files of <paramref name="repo"/> at <paramref name="revision"/> that match any of
    /// <paramref name="include"/> (all files when empty) into <paramref name="folder"/>. Files already there from
    /// the same repository and commit are skipped; other existing files are only overwritten with
    /// <paramref name="force"/>, which also re-downloads everything from scratch.
    /// </summary>
    public async Task<DownloadResult> DownloadAsync(string repo, string folder, string revision = "main", IReadOnlyList<string>? include = null,
        bool force = false, IDownloadProgress? progress = null, CancellationToken ct = default)
    {
        var info = await GetRepoInfoAsync(repo, revision, ct, progress).ConfigureAwait(false);
        var patterns = include ?? [];
        var files = info.Files.Where(f => patterns.Count == 0 || patterns.Any(p => GlobMatch(p, f.Path))).ToList();
        if (files.Count == 0)
        {
            string listing = string.Join(", ", info.Files.Take(8).Select(f => f.Path)) + (info.Files.Count > 8 ? ", …" : "");
            throw info.Files.Count == 0 ? new RecurUserException($"{repo}@{revision} has no files")
                : RecurUserException.About($"no file of {repo}@{revision} matches include: {string.Join(' ', patterns)} (it has {info.Files.Count}: {listing})", "include:");
        }
        foreach (var f in files)
        {
            if (!IsSafeRelativePath(f.Path) || f.Path.Any(char.IsControl))
                throw new RecurUserException($"{repo}: refusing the file name '{string.Concat(f.Path.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()))}' (absolute, with '..' or control characters)");
            // The download record must stay Recur's own; a repository file of that name would replace it.
            if (f.Path == ManifestName || f.Path.EndsWith(".incomplete", StringComparison.Ordinal))
                throw RecurUserException.About($"{repo}: the repository has a file named '{f.Path}', which Recur uses for its own download bookkeeping; leave it out with an include: pattern", "include:");
        }

        string commit = info.Sha ?? revision;
        string dir = Path.GetFullPath(folder);
        string manifestPath = Path.Combine(dir, ManifestName);
        var manifest = ReadManifest(manifestPath);
        var upToDate = new List<string>();
        var todo = new List<RepoFile>();
        var conflicts = new List<string>();
        foreach (var f in files)
        {
            string target = Path.Combine(dir, f.Path);
            if (force)
            {
                if (File.Exists(target + ".incomplete")) File.Delete(target + ".incomplete");
                todo.Add(f);
            }
            else if (!File.Exists(target)) todo.Add(f);
            else if (manifest.TryGetValue(f.Path, out var m) && m.Repo == repo && m.Commit == commit && m.Size == new FileInfo(target).Length
                     && (f.Size is null || f.Size == m.Size))
                upToDate.Add(f.Path);
            else conflicts.Add(f.Path);
        }
        if (conflicts.Count > 0)
            throw RecurUserException.About(
                $"{dir}: {conflicts.Count} file(s) would be overwritten ({string.Join(", ", conflicts.Take(3))}{(conflicts.Count > 3 ? ", …" : "")}) that were not downloaded from {repo}@{Short(commit)}; pass force: true to overwrite them", "force: true");

        foreach (var f in upToDate) progress?.UpToDate(f);
        var downloaded = new List<string>();
        long bytes = 0;
        foreach (var f in todo)
        {
            bytes += await DownloadFileAsync(repo, commit, f.Path, Path.Combine(dir, f.Path), f, progress, ct).ConfigureAwait(false);
            downloaded.Add(f.Path);
            manifest[f.Path] = new ManifestEntry(repo, commit, new FileInfo(Path.Combine(dir, f.Path)).Length);
            AtomicFile.WriteAllText(manifestPath, JsonSerializer.Serialize(manifest, ManifestJson));
        }
        return new DownloadResult(repo, revision, info.Sha, dir, downloaded, upToDate, bytes);
    }

    static string Short(string commit) => commit.Length == 40 ? commit[..7] : commit;

    static readonly JsonSerializerOptions ManifestJson = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    static Dictionary<string, ManifestEntry> ReadManifest(string path)
    {
        if (!File.Exists(path)) return [];
        try { return JsonSerializer.Deserialize<Dictionary<string, ManifestEntry>>(File.ReadAllText(path), ManifestJson) ?? []; }
        // A damaged manifest only costs re-checks: treat files as unknown (they then count as conflicts).
        catch (JsonException) { return []; }
    }
}
