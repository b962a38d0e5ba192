using Recur.Checkpoints;
using Recur.Hub;
using Recur.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Hub;

/// <summary>
/// Models in the Hugging Face hub cache layout (huggingface_hub's snapshot_download): every file of a snapshot
/// is a relative symbolic link into blobs/.
/// </summary>
public sealed class HubCacheTests
{
    /// <summary>
    /// Moves a model folder's files into <c>cache/models--org--name</c>: blobs named by a fake hash,
    /// snapshots/&lt;commit&gt;/&lt;file&gt; → ../../blobs/&lt;hash&gt;, refs/main holding the commit.
    /// </summary>
    static (string Cache, string Snapshot) ToHubCache(string modelDir, string repo = "org/tiny-model")
    {
        string cache = Path.Combine(TestModels.TempDir(), "hub");
        string repoDir = Path.Combine(cache, "models--" + repo.Replace("/", "--"));
        const string commit = "0123456789abcdef0123456789abcdef01234567";
        string snapshot = Path.Combine(repoDir, "snapshots", commit);
        Directory.CreateDirectory(Path.Combine(repoDir, "blobs"));
        Directory.CreateDirectory(Path.Combine(repoDir, "refs"));
        Directory.CreateDirectory(snapshot);
        File.WriteAllText(Path.Combine(repoDir, "refs", "main"), commit);
        int i = 0;
        foreach (var f in Directory.GetFiles(modelDir))
        {
            string blob = $"{i++:x4}{new string('e', 60)}";
            File.Move(f, Path.Combine(repoDir, "blobs", blob));
            File.CreateSymbolicLink(Path.Combine(snapshot, Path.GetFileName(f)), Path.Combine("..", "..", "blobs", blob));
        }
        return (cache, snapshot);
    }

    [Fact]
    public void A_snapshot_of_symbolic_links_loads_like_the_folder_it_came_from()
    {
        string dir = ChatModels.Plain();
        using var expected = ModelLoader.Load(dir, ScalarType.Float32, CPU);
        using var ids = tensor(new long[] { 1, 5, 9 }).unsqueeze(0);
        using var want = expected.Forward(ids);
        var (_, snapshot) = ToHubCache(dir);
        Assert.NotNull(new FileInfo(Path.Combine(snapshot, "model.safetensors")).LinkTarget);
        using var m = ModelLoader.Load(snapshot, ScalarType.Float32, CPU);
        using var got = m.Forward(ids);
        Assert.True(TensorAssert.Same(want, got));
    }

    [Fact]
    public void A_repo_id_and_the_cache_folder_resolve_to_the_main_snapshot()
    {
        var (cache, snapshot) = ToHubCache(ChatModels.Plain());
        string? Env(string k) => k == "HF_HUB_CACHE" ? cache : null;
        Assert.Equal(snapshot, HubCache.Resolve("org/tiny-model", Env));
        Assert.Equal(snapshot, HubCache.Resolve("org/tiny-model@main", Env));
        Assert.Equal(snapshot, HubCache.Resolve("org/tiny-model@0123456789abcdef0123456789abcdef01234567", Env));
        Assert.Equal(snapshot, HubCache.Resolve(Path.Combine(cache, "models--org--tiny-model"), Env));
        // HF_HOME/hub when HF_HUB_CACHE is not set, as huggingface_hub does.
        string home = Path.GetDirectoryName(cache)!;
        Assert.Equal(snapshot, HubCache.Resolve("org/tiny-model", k => k == "HF_HOME" ? home : null));
        Assert.Equal(Path.Combine(home, "hub"), HubCache.Root(k => k == "HF_HOME" ? home : null));

        var missing = Assert.Throws<RecurUserException>(() => HubCache.Resolve("org/other", Env));
        Assert.Contains("models--org--other", missing.Message);
        // The library names its own downloader; the CLI names its verb.
        Assert.Contains("download org/other into a folder (HubClient.DownloadAsync", missing.Message);
        Assert.DoesNotContain("recur download", missing.Message);
        Assert.Contains("(recur download --out DIR, or huggingface-cli download)", Recur.Cli.Common.Describe(missing));
        var badRev = Assert.Throws<RecurUserException>(() => HubCache.Resolve("org/tiny-model@v9", Env));
        Assert.Contains("no snapshot for revision 'v9'", badRev.Message);
        // Ordinary paths are left alone.
        Assert.Equal("not-cached", HubCache.Resolve("not-cached", Env));
        Assert.Equal("./runs/x", HubCache.Resolve("./runs/x", Env));
    }

    [Fact]
    public void Generate_accepts_a_repo_id_from_the_cache()
    {
        var (cache, _) = ToHubCache(ChatModels.Plain());
        var r = CliProcess.RunWith(null, new Dictionary<string, string> { ["HF_HUB_CACHE"] = cache },
            "generate", "--model", "org/tiny-model", "--prompt", "the cat", "--max-new-tokens", "3", "--threads", "1");
        Assert.True(r.Code == 0, r.Stderr);
    }

    [Fact]
    public void A_link_to_something_that_is_not_a_file_is_refused_with_the_file_named()
    {
        string dir = ChatModels.Plain();
        string weights = Path.Combine(dir, "model.safetensors");
        File.Delete(weights);
        File.CreateSymbolicLink(weights, Path.Combine(dir, "no-such-blob"));
        var dangling = Assert.Throws<RecurUserException>(() => ModelLoader.Load(dir, ScalarType.Float32, CPU));
        Assert.Contains("model.safetensors", dangling.Message);
        File.Delete(weights);
        File.CreateSymbolicLink(weights, dir);
        var toFolder = Assert.Throws<RecurUserException>(() => ModelLoader.Load(dir, ScalarType.Float32, CPU));
        Assert.Contains("model.safetensors", toFolder.Message);
    }
}
