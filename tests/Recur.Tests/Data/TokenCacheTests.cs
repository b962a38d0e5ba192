using System.Security.Cryptography;
using System.Text.Json;
using Recur.Data;
using Xunit;
using static Recur.Tests.Data.DataTestKit;

namespace Recur.Tests.Data;

/// <summary>The token cache: sidecar contents, reuse, invalidation, atomic writes and progress.</summary>
public sealed class TokenCacheTests : IDisposable
{
    private readonly DataTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    private sealed class Recorder : IProgress<(long Done, long Total)>
    {
        public readonly List<(long Done, long Total)> Reports = [];
        public void Report((long Done, long Total) value) => Reports.Add(value);
    }

    [Fact]
    public void Sidecar_records_tokenizer_sources_and_counts()
    {
        string path = _kit.WriteJsonl("a.jsonl", [Words(1, 2, 3), Words(4)]);
        string tokDir = _kit.WriteTokenizer();
        using var tok = Recur.Tokenization.TokenizerLoader.Load(tokDir);
        using var data = PackedDataset.Open(Spec(4, path), tok, _kit.Cache);
        var src = data.Sources[0];
        Assert.True(src.Built);

        var (tokens, sidecar) = TokenCache.PathsFor(src.Spec, TokenizerIdentity.Of(tok), _kit.Cache);
        Assert.Equal(tokens, src.TokensPath);
        using var json = JsonDocument.Parse(File.ReadAllText(sidecar));
        var root = json.RootElement;
        Assert.Equal(TokenCache.FormatVersion, root.GetProperty("format_version").GetInt32());
        Assert.Equal("uint16", root.GetProperty("dtype").GetString());
        Assert.Equal(2, root.GetProperty("documents").GetInt64());
        Assert.Equal(5 + 3, root.GetProperty("tokens").GetInt64());
        var t = root.GetProperty("tokenizer");
        Assert.Equal(Path.Combine(tokDir, "tokenizer.json"), t.GetProperty("path").GetString());
        string sha = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(Path.Combine(tokDir, "tokenizer.json"))));
        Assert.Equal(sha, t.GetProperty("sha256").GetString());
        Assert.True(t.GetProperty("side_files").TryGetProperty("tokenizer_config.json", out _));
        var f = root.GetProperty("source").GetProperty("files")[0];
        Assert.Equal(path, f.GetProperty("path").GetString());
        Assert.Equal(new FileInfo(path).Length, f.GetProperty("size").GetInt64());
        // Token file: 8 uint16 little-endian ids.
        byte[] bytes = File.ReadAllBytes(tokens);
        Assert.Equal(16, bytes.Length);
        Assert.Equal(Bos, BitConverter.ToUInt16(bytes, 0));
        Assert.Equal(W(1), BitConverter.ToUInt16(bytes, 2));
        Assert.Equal(Eos, BitConverter.ToUInt16(bytes, 14));
        // Atomic writes leave no temporary files behind.
        Assert.Equal(2, Directory.GetFiles(_kit.Cache).Length);
    }

    [Fact]
    public void Cache_is_reused_while_nothing_changes_and_rebuilt_when_a_source_changes()
    {
        string path = _kit.WriteJsonl("a.jsonl", [Words(1, 2, 3), Words(4)]);
        using var tok = _kit.LoadTokenizer();
        string tokensPath;
        using (var first = PackedDataset.Open(Spec(4, path), tok, _kit.Cache))
        {
            Assert.True(first.Sources[0].Built);
            tokensPath = first.Sources[0].TokensPath;
        }
        var stamp = File.GetLastWriteTimeUtc(tokensPath);
        var progress = new Recorder();
        using (var again = PackedDataset.Open(Spec(4, path), tok, _kit.Cache, progress))
        {
            Assert.False(again.Sources[0].Built);
            Assert.Equal(8, again.Sources[0].Info.Tokens);
        }
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(tokensPath));
        Assert.All(progress.Reports, r => Assert.Equal(0, r.Total));

        // A different seq_len, seed or split does not need new tokens.
        using (var other = PackedDataset.Open(Spec(2, path) with { Seed = 5, ValRows = 1 }, tok, _kit.Cache))
            Assert.False(other.Sources[0].Built);

        _kit.WriteJsonl("a.jsonl", [Words(1, 2, 3), Words(4), Words(5, 6)]);
        using (var changed = PackedDataset.Open(Spec(4, path), tok, _kit.Cache))
        {
            Assert.True(changed.Sources[0].Built);
            Assert.Equal(3, changed.Sources[0].Info.Documents);
            Assert.Equal(tokensPath, changed.Sources[0].TokensPath);
        }

        // Touching the file (same bytes, new time) also rebuilds: stamps are size + modification time.
        File.SetLastWriteTimeUtc(path, File.GetLastWriteTimeUtc(path).AddMinutes(1));
        using (var touched = PackedDataset.Open(Spec(4, path), tok, _kit.Cache))
            Assert.True(touched.Sources[0].Built);
    }

    [Fact]
    public void Another_tokenizer_or_template_gets_its_own_cache()
    {
        string path = _kit.WriteJsonl("a.jsonl", [Words(1, 2, 3)]);
        using var withBos = _kit.LoadTokenizer("a", addBos: true);
        using var noBos = _kit.LoadTokenizer("b", addBos: false);
        string p1, p2;
        using (var d1 = PackedDataset.Open(Spec(4, path), withBos, _kit.Cache)) { p1 = d1.Sources[0].TokensPath; Assert.Equal(5, d1.Sources[0].Info.Tokens); }
        using (var d2 = PackedDataset.Open(Spec(4, path), noBos, _kit.Cache)) { p2 = d2.Sources[0].TokensPath; Assert.Equal(4, d2.Sources[0].Info.Tokens); Assert.True(d2.Sources[0].Built); }
        Assert.NotEqual(p1, p2);
        using (var d1 = PackedDataset.Open(Spec(4, path), withBos, _kit.Cache))
            Assert.False(d1.Sources[0].Built);
    }

    [Fact]
    public void A_corrupt_sidecar_or_truncated_token_file_is_rebuilt()
    {
        string path = _kit.WriteJsonl("a.jsonl", [Words(1, 2, 3)]);
        using var tok = _kit.LoadTokenizer();
        string tokens, sidecar;
        using (var d = PackedDataset.Open(Spec(4, path), tok, _kit.Cache))
            (tokens, sidecar) = TokenCache.PathsFor(d.Sources[0].Spec, TokenizerIdentity.Of(tok), _kit.Cache);

        File.WriteAllBytes(tokens, File.ReadAllBytes(tokens)[..4]);
        using (var d = PackedDataset.Open(Spec(4, path), tok, _kit.Cache))
        {
            Assert.True(d.Sources[0].Built);
            Assert.Equal(5, d.Sources[0].Tokens.Count);
        }
        File.WriteAllText(sidecar, "{ not json");
        using (var d = PackedDataset.Open(Spec(4, path), tok, _kit.Cache))
            Assert.True(d.Sources[0].Built);
    }

    [Fact]
    public void Progress_counts_source_bytes_up_to_the_total()
    {
        string a = _kit.WriteRandomJsonl("a.jsonl", docs: 3000, maxWords: 5, seed: 1);
        string b = _kit.Write("b.txt", "w1 w2 w3");
        using var tok = _kit.LoadTokenizer();
        var progress = new Recorder();
        using var data = PackedDataset.Open(Spec(16, a, b), tok, _kit.Cache, progress);
        long total = new FileInfo(a).Length + new FileInfo(b).Length;
        Assert.All(progress.Reports, r => Assert.Equal(total, r.Total));
        Assert.Equal(total, progress.Reports[^1].Done);
        Assert.True(progress.Reports.Count > 3);
        Assert.Equal(progress.Reports.Select(r => r.Done).Order(), progress.Reports.Select(r => r.Done));
    }

    [Fact]
    public void Read_only_open_refuses_a_missing_cache()
    {
        string path = _kit.WriteJsonl("a.jsonl", [Words(1)]);
        using var tok = _kit.LoadTokenizer();
        var e = Assert.Throws<RecurUserException>(() => PackedDataset.Open(Spec(4, path), tok, _kit.Cache, buildMissing: false));
        Assert.Contains("recur data prepare", e.Message);
        Assert.Contains(path, e.Message);
    }
}
