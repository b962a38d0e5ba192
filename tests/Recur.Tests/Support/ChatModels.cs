using System.Text.Json;
using Recur.Checkpoints;
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Tests.Support;

/// <summary>
/// Tiny model folders with a word-level tokenizer.json written by the test: 128 tokens, to match
/// <see cref="Presets.TinyTest"/>'s vocabulary, so every id a random model produces decodes to a word.
/// </summary>
static class ChatModels
{
    public const string ChatMLTemplate =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}" +
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    static readonly string[] Words = ["the", "a", "cat", "dog", "sat", "on", "mat", "and", "ran", "to", "hello", "world", "is", "big", "small", "red", "blue", "stop", "here", "now"];

    /// <summary>Special tokens first (ids 0–4), then <see cref="Words"/>, then w{id} up to id 127.</summary>
    public static Dictionary<string, int> Vocab()
    {
        var vocab = new Dictionary<string, int> { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2, ["<|im_start|>"] = 3, ["<|im_end|>"] = 4 };
        foreach (var w in Words) vocab[w] = vocab.Count;
        while (vocab.Count < 128) vocab[$"w{vocab.Count}"] = vocab.Count;
        return vocab;
    }

    public static void WriteTokenizer(string dir, string? chatTemplate = null)
    {
        var vocab = Vocab();
        var added = vocab.Where(kv => kv.Value < 5).Select(kv => new Dictionary<string, object>
        {
            ["id"] = kv.Value, ["content"] = kv.Key, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        });
        var json = new Dictionary<string, object?>
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added,
            ["normalizer"] = null, ["pre_tokenizer"] = new { type = "Whitespace" }, ["post_processor"] = null, ["decoder"] = null,
            ["model"] = new Dictionary<string, object> { ["type"] = "WordLevel", ["vocab"] = vocab, ["unk_token"] = "<unk>" },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(json));
        var config = new Dictionary<string, object?> { ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["add_bos_token"] = true };
        if (chatTemplate is not null) config["chat_template"] = chatTemplate;
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(config));
    }

    // Weights from a generator of the test's own: the global one is shared with tests running in parallel,
    // which would make the "same" seeded model differ from run to run.
    static DecoderModel Seeded(long seed)
    {
        using var gen = new Generator((ulong)seed);
        var m = new DecoderModel(Presets.TinyTest);
        using (no_grad())
        using (NewDisposeScope()) // holds the temporaries until each copy is done (src/Recur/Model/Scalars.cs)
            foreach (var (name, p) in m.named_parameters())
                p.copy_(name.Contains("norm") ? Scalars.Add(Scalars.Mul(randn(p.shape, generator: gen), 0.1), 1) : Scalars.Mul(randn(p.shape, generator: gen), 0.05));
        m.eval();
        return m;
    }

    /// <summary>A tiny random plain decoder with the word tokenizer.</summary>
    public static string Plain(string? chatTemplate = null, long seed = 3)
    {
        string dir = Path.Combine(TestModels.TempDir(), "plain");
        using (var m = Seeded(seed)) HfCheckpoint.Save(m, dir);
        WriteTokenizer(dir, chatTemplate);
        return dir;
    }

    /// <summary>A tiny random recurrent model (shape 1,2,1) with the word tokenizer.</summary>
    public static string Recurrent(string? chatTemplate = null, long seed = 5)
    {
        using var b = Seeded(seed);
        using var m = Retrofit.FromDecoder(b, new RetrofitOptions { Layers = LayerMap.Default(4, 1, 2, 1), Seed = seed, MeanRecurrence = 4 });
        string dir = Path.Combine(TestModels.TempDir(), "recurrent");
        RecurrentCheckpoint.Save(m, dir);
        WriteTokenizer(dir, chatTemplate);
        return dir;
    }
}
