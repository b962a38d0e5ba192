using System.Text;
using System.Text.Json;
using Recur.Data;
using Recur.Tokenization;

namespace Recur.Tests.Data;

/// <summary>
/// A temp folder with a tiny word-level tokenizer.json written by the test: ids 0 = &lt;unk&gt;,
/// 1 = &lt;s&gt;, 2 = &lt;/s&gt;, then "w0", "w1", ... at 3, 4, ..., then "Question", "Answer"
/// and ":". So the text "w5 w7" is ids [8, 10], and expected token streams can be written by
/// hand without running the tokenizer.
/// </summary>
public sealed class DataTestKit : IDisposable
{
    public const int Bos = 1, Eos = 2;

    public string Dir { get; } = Directory.CreateTempSubdirectory("recur-data-test-").FullName;

    public void Dispose()
    {
        try { Directory.Delete(Dir, recursive: true); } catch (IOException) { }
    }

    public static int W(int k) => k + 3;

    /// <summary>Writes a tokenizer folder and returns its path. <paramref name="addBos"/> writes a tokenizer_config.json asking for BOS.</summary>
    public string WriteTokenizer(string name = "tok", bool addBos = true, int words = 200)
    {
        string dir = Path.Combine(Dir, name);
        Directory.CreateDirectory(dir);
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (int k = 0; k < words; k++) vocab[$"w{k}"] = W(k);
        foreach (string extra in new[] { "Question", "Answer", ":" }) vocab[extra] = vocab.Count;
        var json = new
        {
            version = "1.0",
            truncation = (object?)null,
            padding = (object?)null,
            added_tokens = new[] { "<unk>", "<s>", "</s>" }.Select((c, i) => new { id = i, content = c, single_word = false, lstrip = false, rstrip = false, normalized = false, special = true }),
            normalizer = (object?)null,
            pre_tokenizer = new { type = "Whitespace" },
            post_processor = (object?)null,
            decoder = (object?)null,
            model = new { type = "WordLevel", vocab, unk_token = "<unk>" },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(json));
        if (addBos)
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>"}""");
        return dir;
    }

    public ITokenizer LoadTokenizer(string name = "tok", bool addBos = true, int words = 200) =>
        TokenizerLoader.Load(WriteTokenizer(name, addBos, words));

    public string Write(string relative, string content)
    {
        string path = Path.Combine(Dir, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, content);
        return path;
    }

    /// <summary>A document of the given word indices, e.g. Words(4, 5) = "w4 w5".</summary>
    public static string Words(params int[] k) => string.Join(' ', k.Select(i => $"w{i}"));

    /// <summary>A JSONL file with one {"text": ...} object per document.</summary>
    public string WriteJsonl(string relative, IEnumerable<string> docs) =>
        Write(relative, string.Concat(docs.Select(d => JsonSerializer.Serialize(new { text = d }) + "\n")));

    /// <summary>
    /// A JSONL file of <paramref name="docs"/> documents of 1–<paramref name="maxWords"/> words each,
    /// word indices drawn from a seeded SplitMix64 so tests have varied but reproducible data.
    /// </summary>
    public string WriteRandomJsonl(string relative, int docs, int maxWords, ulong seed, int words = 200)
    {
        var rng = new SplitMix64(seed);
        var list = new List<string>();
        for (int d = 0; d < docs; d++)
        {
            int n = 1 + (int)rng.NextBelow((ulong)maxWords);
            list.Add(Words([.. Enumerable.Range(0, n).Select(_ => (int)rng.NextBelow((ulong)words))]));
        }
        return WriteJsonl(relative, list);
    }

    /// <summary>The token stream a document list should produce: per document [BOS] + word ids + EOS, derived from the word indices.</summary>
    public static List<long> Stream(IEnumerable<int[]> docs, bool bos)
    {
        var s = new List<long>();
        foreach (var d in docs)
        {
            if (bos) s.Add(Bos);
            s.AddRange(d.Select(k => (long)W(k)));
            s.Add(Eos);
        }
        return s;
    }

    public static DataSpec Spec(int seqLen, params string[] paths) => new()
    {
        Sources = [.. paths.Select(p => new DataSourceSpec { Path = p })],
        SeqLen = seqLen,
        Seed = 1234,
    };

    public string Cache => Path.Combine(Dir, "cache");

    public static string Utf8(byte[] b) => Encoding.UTF8.GetString(b);
}
