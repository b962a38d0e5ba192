using System.Text.RegularExpressions;

namespace Recur.Hub;

/// <summary>
/// Finds models in the local Hugging Face hub cache, as transformers' <c>from_pretrained</c> does: a model argument
/// that is not a folder or file of its own may be a repository id (<c>org/name</c>, optionally <c>@revision</c>)
/// downloaded before by huggingface_hub, or the cache's repository folder itself (<c>…/models--org--name</c>). The
/// cache layout is <c>models--org--name/refs/&lt;ref&gt;</c> (a commit hash), <c>snapshots/&lt;commit&gt;/&lt;file&gt;</c>
/// (symbolic links) and <c>blobs/&lt;sha&gt;</c> (the bytes).
/// </summary>
public static partial class HubCache
{
    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")]
    private static partial Regex RepoId();

    [GeneratedRegex(@"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")]
    private static partial Regex Revision();

    /// <summary>
    /// The hub cache folder: <c>HF_HUB_CACHE</c>, the older <c>HUGGINGFACE_HUB_CACHE</c>, <c>HF_HOME/hub</c>,
    /// <c>XDG_CACHE_HOME/huggingface/hub</c>, else <c>~/.cache/huggingface/hub</c> (huggingface_hub's order).
    /// </summary>
    public static string Root(Func<string, string?>? getenv = null)
    {
        getenv ??= Environment.GetEnvironmentVariable;
        static string? Set(string? v) => string.IsNullOrWhiteSpace(v) ? null : v;
        if (Set(getenv("HF_HUB_CACHE")) is { } hub) return hub;
        if (Set(getenv("HUGGINGFACE_HUB_CACHE")) is { } legacy) return legacy;
        if (Set(getenv("HF_HOME")) is { } home) return Path.Combine(home, "hub");
        string cache = Set(getenv("XDG_CACHE_HOME")) ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(cache, "huggingface", "hub");
    }

    /// <summary>
    /// The folder or file to load for a model argument: an existing path as given (a cache repository folder
    /// becomes its <c>main</c> snapshot), a repository id found in the cache as its snapshot folder. Anything else
    /// is returned unchanged, so the loader reports it as not found; an id that looks like <c>org/name</c> but is
    /// in neither place gets a one-line error that says where it was looked for.
    /// </summary>
    public static string Resolve(string model, Func<string, string?>? getenv = null)
    {
        if (File.Exists(model)) return model;
        if (Directory.Exists(model)) return IsRepoFolder(model) ? Snapshot(model, "main") : model;
        string id = model, revision = "main";
        int at = model.IndexOf('@');
        if (at > 0) (id, revision) = (model[..at], model[(at + 1)..]);
        if (!RepoId().IsMatch(id) || id.Split('/').Any(p => p is "." or "..")) return model;
        string repoFolder = Path.Combine(Root(getenv), "models--" + id.Replace("/", "--"));
        if (Directory.Exists(repoFolder)) return Snapshot(repoFolder, revision);
        if (id.Contains('/') && !model.StartsWith('.'))
            throw RecurUserException.About($"{model}: no such folder, and not in the Hugging Face cache ({repoFolder} does not exist); download {id} into a folder (HubClient.DownloadAsync, or huggingface-cli download) and load that folder", "HubClient.DownloadAsync");
        return model;
    }

    static bool IsRepoFolder(string dir) =>
        Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir))).StartsWith("models--", StringComparison.Ordinal)
        && Directory.Exists(Path.Combine(dir, "snapshots"));

    // A revision is a ref name (refs/<name> holds its commit) or a commit hash (a snapshot folder's name).
    static string Snapshot(string repoFolder, string revision)
    {
        if (!Revision().IsMatch(revision) || revision.Split('/').Any(p => p is "." or ".."))
            throw new RecurUserException($"'{revision}' is not a valid revision (a branch, tag or commit hash)");
        string commit = revision;
        string refFile = Path.Combine(repoFolder, "refs", revision);
        if (File.Exists(refFile)) commit = File.ReadAllText(refFile).Trim();
        string snapshots = Path.Combine(repoFolder, "snapshots");
        string snapshot = Path.Combine(snapshots, commit);
        if (Revision().IsMatch(commit) && Directory.Exists(snapshot)) return snapshot;
        var all = Directory.Exists(snapshots) ? Directory.GetDirectories(snapshots).Select(Path.GetFileName).ToList() : [];
        throw new RecurUserException($"{repoFolder}: no snapshot for revision '{revision}'" +
            (all.Count > 0 ? $" (cached: {string.Join(", ", all)})" : " (the cache holds no snapshot)"));
    }
}
