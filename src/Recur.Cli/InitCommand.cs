using System.CommandLine;
using Recur.Checkpoints;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Cli;

/// <summary>Creates a randomly initialised model of a named shape: for first tries, tests and benchmarks.</summary>
static class InitCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = $"Shape: {string.Join(", ", Presets.ByName.Keys)}", Required = true };
        var output = new Option<string>("--out") { Description = "Output model folder (Hugging Face layout)", Required = true };
        var seed = new Option<long>("--seed") { Description = "Random seed", DefaultValueFactory = _ => 0 };
        var std = new Option<double>("--std") { Description = "Standard deviation of the random weights", DefaultValueFactory = _ => 0.02 };
        var dtype = Common.SaveDTypeOption();
        var force = new Option<bool>("--force") { Description = "Replace an existing output folder" };
        var cmd = new Command("init", "Create a randomly initialised Llama/OLMo-2 model of a named shape") { preset, output, seed, std, dtype, force };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            var cfg = Presets.Get(parse.GetValue(preset)!);
            string dst = parse.GetValue(output)!;
            if (Directory.Exists(dst) && !parse.GetValue(force)) throw new RecurUserException($"{dst}: output folder already exists (use --force to overwrite)");
            if (parse.GetValue(std) <= 0) throw new RecurUserException($"--std must be > 0 (got {parse.GetValue(std)})");
            var storeType = HfCheckpoint.ParseDType(parse.GetValue(dtype)!);
            using var gen = new Generator((ulong)parse.GetValue(seed));
            using var m = new DecoderModel(cfg);
            using (no_grad())
            using (NewDisposeScope()) // holds the temporaries until copy_ has read them (Model/Scalars.cs)
                foreach (var (name, p) in m.named_parameters())
                    if (name.Contains("norm")) p.fill_(Scalars.One);
                    else p.copy_(Scalars.Mul(randn(p.shape, generator: gen), parse.GetValue(std)));
            HfCheckpoint.Save(m, dst, storeType, force: parse.GetValue(force));
            Console.WriteLine($"wrote {dst}: {parse.GetValue(preset)} ({Common.Count(m.parameters().Sum(p => p.numel()))} parameters, random, {HfCheckpoint.DTypeName(storeType)})");
            return 0;
        }));
        return cmd;
    }
}
