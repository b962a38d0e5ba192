using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// `recur generate`'s routing to the libtorch-free path (Cli/TorchFreeRoute.cs, Engine/MappedDecoder.cs), checked in
/// a child process: which runs take it, that libtorch is then never mapped into the process, and that the output and
/// the errors are the libtorch path's.
/// </summary>
public class TorchFreeGenerateTests
{
    static readonly Dictionary<string, string> Traced = new() { ["RECUR_TRACE_STARTUP"] = "1" };
    static readonly Dictionary<string, string> TracedTorch = new() { ["RECUR_TRACE_STARTUP"] = "1", ["RECUR_TORCH_FREE"] = "0" };

    static CliProcess.Result Generate(string dir, IReadOnlyDictionary<string, string> env, params string[] args) =>
        CliProcess.RunWith(null, env, ["generate", "--model", dir, .. args]);

    static string Folder(ModelConfig config, ScalarType dtype)
    {
        string dir = Path.Combine(TestModels.TempDir(), "model");
        using var m = TestModels.Random(config, 21);
        HfCheckpoint.Save(m, dir, dtype);
        return dir;
    }

    [Theory]
    [InlineData("llama", "fp32")]
    [InlineData("olmo2", "bf16")]
    public void Greedy_generate_runs_without_libtorch_and_prints_the_libtorch_paths_ids(string type, string dtype)
    {
        string dir = Folder(type == "olmo2" ? Presets.TinyOlmo2Test : Presets.TinyTest, dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32);
        string[] args = ["--prompt-ids", "1 5 9 14", "--max-new-tokens", "24", "--output-ids", "--dtype", dtype, "--threads", "1"];
        var free = Generate(dir, Traced, args);
        Assert.True(free.Code == 0, free.Stderr);
        Assert.Contains($"libtorch-free path ({(dtype == "bf16" ? "bfloat16" : "float32")} weights mapped)", free.Stderr);
        Assert.Contains("libtorch_cpu.so not mapped", free.Stderr);
        var torch = Generate(dir, TracedTorch, args);
        Assert.True(torch.Code == 0, torch.Stderr);
        Assert.Contains("libtorch path: RECUR_TORCH_FREE=0", torch.Stderr);
        Assert.NotEmpty(free.Stdout.Trim());
        Assert.Equal(torch.Stdout, free.Stdout);
    }

    [Fact]
    public void A_text_prompt_streams_the_same_text_and_closing_line()
    {
        string dir = ChatModels.Plain();
        string[] args = ["--prompt", "the cat sat on the mat", "--max-new-tokens", "16"];
        var free = Generate(dir, Traced, args);
        var torch = Generate(dir, TracedTorch, args);
        Assert.True(free.Code == 0, free.Stderr);
        Assert.Contains("libtorch-free path", free.Stderr);
        Assert.Contains("libtorch_cpu.so not mapped", free.Stderr); // the tokenizer (tokenizer.json, native Rust) does not load it either
        Assert.Equal(torch.Stdout, free.Stdout);
        static string Closing(string stderr) => System.Text.RegularExpressions.Regex.Replace(stderr.Split('\n').Last(l => l.StartsWith('[')), @"[0-9.]+ s, [0-9.]+ tok/s", "");
        Assert.Equal(Closing(torch.Stderr), Closing(free.Stderr));
    }

    [Fact]
    public void Start_up_garbage_is_collected_after_the_tokenizer_and_before_the_weights_are_read()
    {
        string dir = ChatModels.Plain();
        string smaps = TestModels.TempDir();
        var r = Generate(dir, new Dictionary<string, string> { ["RECUR_TRACE_STARTUP"] = "1", ["RECUR_TRACE_SMAPS"] = smaps },
            "--prompt", "the cat sat", "--max-new-tokens", "4");
        Assert.True(r.Code == 0, r.Stderr);
        var phases = r.Stderr.Split('\n').Where(l => l.StartsWith("[startup]", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf(" ms)  ", StringComparison.Ordinal) + " ms)  ".Length)..]).ToList();
        int tokenizer = phases.IndexOf("tokenizer loaded"), collected = phases.IndexOf("start-up garbage collected");
        int generated = phases.FindIndex(p => p.StartsWith("generated", StringComparison.Ordinal));
        Assert.True(tokenizer >= 0 && tokenizer < collected && collected < generated, string.Join(" | ", phases));
        // RECUR_TRACE_SMAPS: one copy of /proc/self/smaps per phase, the last one with the weights mapped.
        var files = Directory.GetFiles(smaps, "*.smaps").Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(phases.Count, files.Length);
        Assert.EndsWith("-start-up-garbage-collected.smaps", files[collected]);
        Assert.Contains("/model.safetensors", File.ReadAllText(files[^1]));
    }

    [Fact]
    public void Everything_else_takes_the_libtorch_path_and_says_why()
    {
        string plain = ChatModels.Plain();
        (string Model, string[] Args, string Why)[] cases =
        [
            (plain, ["--prompt", "the cat", "--temperature", "0.8", "--seed", "3"], "sampling (--temperature above 0)"),
            (plain, ["--prompt", "the cat", "--prompt", "a dog"], "several prompts"),
            (plain, ["--prompt", "the cat", "--dtype", "bf16"], "tensor 'model.embed_tokens.weight' is stored as F32, not the compute dtype BF16"),
            (plain, ["--prompt", "the cat", "--recurrences", "2"], "--recurrences"),
            (ChatModels.Recurrent(), ["--prompt", "the cat"], "a recurrent model"),
        ];
        foreach (var (model, args, why) in cases)
        {
            var r = Generate(model, Traced, [.. args, "--max-new-tokens", "3"]);
            Assert.True(r.Code == 0, $"{string.Join(' ', args)}: {r.Stderr}");
            Assert.Contains($"libtorch path: {why}", r.Stderr);
        }
    }

    [Fact]
    public void A_truncated_weight_file_fails_with_the_libtorch_paths_one_line_error()
    {
        string dir = ChatModels.Plain();
        using (var fs = File.OpenWrite(Path.Combine(dir, "model.safetensors"))) fs.SetLength(fs.Length - 4096);
        string[] args = ["--prompt-ids", "1 2 3", "--output-ids"];
        var free = Generate(dir, new Dictionary<string, string>(), args);
        var torch = Generate(dir, new Dictionary<string, string> { ["RECUR_TORCH_FREE"] = "0" }, args);
        Assert.Equal(1, free.Code);
        Assert.Equal(1, torch.Code);
        string line = Assert.Single(free.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: ", line);
        Assert.Contains(Path.Combine(dir, "model.safetensors"), line);
        Assert.Contains("run past the end", line);
        Assert.Equal(torch.Stderr.Trim(), line);
    }
}
