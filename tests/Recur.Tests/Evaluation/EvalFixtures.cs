using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using Recur.Tokenization;

namespace Recur.Tests.Evaluation;

/// <summary>
/// A tiny byte-level BPE tokenizer written by the test (ASCII bytes, plus one merge per lower-case letter
/// with a leading space, so "x b" is not "x " + "b"), and tiny random models whose vocabulary fits it.
/// </summary>
static class EvalFixtures
{
    public const int Unk = 0, Bos = 1, Eos = 2;

    /// <summary>GPT-2's byte → printable character map (the ByteLevel pre-tokenizer's alphabet).</summary>
    static char ByteChar(int b)
    {
        bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
        if (printable) return (char)b;
        int n = 0;
        for (int i = 0; i < b; i++)
            if (!(i is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF)) n++;
        return (char)(256 + n);
    }

    /// <summary>Ids: 0 &lt;unk&gt;, 1 &lt;s&gt;, 2 &lt;/s&gt;, 3..130 the ASCII bytes, then "Ġa".."Ġz".</summary>
    public static string TokenizerJson()
    {
        var vocab = new JsonObject { ["<unk>"] = Unk, ["<s>"] = Bos, ["</s>"] = Eos };
        for (int b = 0; b < 128; b++) vocab[ByteChar(b).ToString()] = 3 + b;
        var merges = new JsonArray();
        char space = ByteChar(' ');
        for (char c = 'a'; c <= 'z'; c++)
        {
            vocab[$"{space}{c}"] = vocab.Count;
            merges.Add($"{space} {c}");
        }
        JsonObject Added(int id, string content) => new()
        {
            ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        };
        var byteLevel = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Added(Unk, "<unk>"), Added(Bos, "<s>"), Added(Eos, "</s>")),
            ["normalizer"] = null,
            ["pre_tokenizer"] = byteLevel.DeepClone(),
            ["post_processor"] = null,
            ["decoder"] = byteLevel.DeepClone(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = "<unk>", ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["vocab"] = vocab, ["merges"] = merges,
            },
        };
        return root.ToJsonString();
    }

    public static int TokenizerVocab => 3 + 128 + 26;

    /// <summary>Writes tokenizer.json into <paramref name="dir"/> (created if needed) and returns the folder.</summary>
    public static string WriteTokenizer(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TokenizerJson());
        return dir;
    }

    static readonly Lazy<string> SharedTokenizerDir = new(() => WriteTokenizer(Path.Combine(TestModels.TempDir("recur-eval-tok"), "tok")));

    public static ITokenizer Tokenizer() => TokenizerLoader.Load(SharedTokenizerDir.Value);

    /// <summary>A tiny Llama whose embedding fits the tokenizer (a few spare rows, as padded vocabularies have).</summary>
    public static ModelConfig Config(int vocab = 160) => Presets.TinyTest with { VocabSize = vocab, MaxPositionEmbeddings = 512 };

    public static DecoderModel Decoder(long seed = 3) => TestModels.Random(Config(), seed);

    /// <summary>A (1, 2, 1) recurrent model retrofitted from a random 4-layer decoder; <paramref name="stateStd"/> 0 makes s_0 zero.</summary>
    public static RecurrentModel Recurrent(long seed = 3, double stateStd = InitValues.HuginnStd, int vocab = 160)
    {
        using var b = TestModels.Random(Config(vocab), seed);
        return Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(4, 1, 2, 1), Seed = seed, StateStd = stateStd, MeanRecurrence = 2 });
    }

    /// <summary>A recurrent model folder with the tokenizer beside it.</summary>
    public static string RecurrentFolder(long seed = 3, int vocab = 160)
    {
        var dir = Path.Combine(TestModels.TempDir("recur-eval-model"), "model");
        using (var m = Recurrent(seed, vocab: vocab)) RecurrentCheckpoint.Save(m, dir);
        WriteTokenizer(dir);
        return dir;
    }

    /// <summary>A plain decoder folder with the tokenizer beside it.</summary>
    public static string DecoderFolder(long seed = 3)
    {
        var dir = TestModels.SaveRandom(Config(), seed);
        WriteTokenizer(dir);
        return dir;
    }
}
