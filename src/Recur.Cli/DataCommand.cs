using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using Recur.Checkpoints;
using Recur.Data;

namespace Recur.Cli;

/// <summary><c>recur data ...</c>: build datasets. <c>synth-math</c> writes the synthetic GSM8K-format problems used by <c>recur demo</c>.</summary>
static class DataCommand
{
    public static readonly string[] SplitFiles = ["train.jsonl", "validation.jsonl", "test.jsonl"];
    public const string InfoFile = "synth-math.json";

    public static Command Create()
    {
        var cmd = new Command("data", "Build datasets: tokenise and pack training data, inspect it, or generate synthetic math problems");
        cmd.Subcommands.Add(DataPrepareCommand.CreatePrepare());
        cmd.Subcommands.Add(DataPrepareCommand.CreateInspect());
        cmd.Subcommands.Add(SynthMathCommand());
        return cmd;
    }

    static Command SynthMathCommand()
    {
        var defaults = new SynthMathOptions();
        var output = new Option<string>("--out") { Description = "Output folder for train.jsonl, validation.jsonl, test.jsonl and synth-math.json", Required = true };
        var count = new Option<int>("--count") { Description = "Total number of problems over the three splits", Required = true };
        var steps = new Option<string>("--steps") { Description = "Reasoning steps per problem, a range A-B or a single number", DefaultValueFactory = _ => $"{defaults.MinSteps}-{defaults.MaxSteps}" };
        var direct = new Option<bool>("--direct") { Description = "Answers are only '#### N', with no reasoning lines" };
        var seed = new Option<ulong>("--seed") { Description = "Seed; the same seed and options give byte-identical files", DefaultValueFactory = _ => defaults.Seed };
        var maxValue = new Option<int>("--max-value") { Description = "Largest starting value, operand or intermediate result", DefaultValueFactory = _ => defaults.MaxValue };
        var valFraction = new Option<double>("--val-fraction") { Description = "Fraction of --count for validation", DefaultValueFactory = _ => defaults.ValidationFraction };
        var testFraction = new Option<double>("--test-fraction") { Description = "Fraction of --count for test", DefaultValueFactory = _ => defaults.TestFraction };
        var force = new Option<bool>("--force") { Description = "Replace the split files in a non-empty output folder" };
        var cmd = new Command("synth-math", "Write seeded synthetic grade-school arithmetic word problems in GSM8K's JSONL format")
        {
            output, count, steps, direct, seed, maxValue, valFraction, testFraction, force,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string dir = parse.GetValue(output)!;
            var (lo, hi) = ParseSteps(parse.GetValue(steps)!);
            var o = new SynthMathOptions(
                Count: parse.GetValue(count), MinSteps: lo, MaxSteps: hi, Direct: parse.GetValue(direct), Seed: parse.GetValue(seed),
                MaxValue: parse.GetValue(maxValue), ValidationFraction: parse.GetValue(valFraction), TestFraction: parse.GetValue(testFraction)).Validate();
            if (File.Exists(dir)) throw new RecurUserException($"--out {dir}: is a file, expected a folder");
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any() && !parse.GetValue(force))
                throw new RecurUserException($"--out {dir}: folder is not empty (use --force to overwrite)");

            var splits = SynthMath.Generate(o);
            Directory.CreateDirectory(dir);
            IReadOnlyList<SynthMathProblem>[] parts = [splits.Train, splits.Validation, splits.Test];
            for (int i = 0; i < parts.Length; i++)
            {
                var part = parts[i];
                AtomicFile.Write(Path.Combine(dir, SplitFiles[i]), fs => SynthMath.WriteJsonl(fs, part));
            }
            AtomicFile.WriteAllText(Path.Combine(dir, InfoFile), Info(o, splits));
            PrintSummary(dir, o, parts);
            return 0;
        }));
        return cmd;
    }

    /// <summary>"1-8" or "4".</summary>
    internal static (int Lo, int Hi) ParseSteps(string text)
    {
        var m = Regex.Match(text.Trim(), @"^(\d{1,4})(?:-(\d{1,4}))?$");
        if (!m.Success) throw new RecurUserException($"--steps must be a range A-B or a single number, e.g. 1-8 (got '{text}')");
        int lo = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        int hi = m.Groups[2].Success ? int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) : lo;
        if (lo < 1 || hi < lo || hi > SynthMathOptions.StepsLimit)
            throw new RecurUserException($"--steps must be A-B with 1 ≤ A ≤ B ≤ {SynthMathOptions.StepsLimit} (got '{text}')");
        return (lo, hi);
    }

    /// <summary>The options and counts that produced the folder, so a run can record exactly which data it saw.</summary>
    static string Info(SynthMathOptions o, SynthMathSplits s)
    {
        var info = new Dictionary<string, object>
        {
            ["generator"] = "synth-math",
            ["format_version"] = SynthMath.FormatVersion,
            ["seed"] = o.Seed,
            ["min_steps"] = o.MinSteps,
            ["max_steps"] = o.MaxSteps,
            ["direct"] = o.Direct,
            ["max_value"] = o.MaxValue,
            ["validation_fraction"] = o.ValidationFraction,
            ["test_fraction"] = o.TestFraction,
            ["counts"] = new Dictionary<string, int> { ["train"] = s.Train.Count, ["validation"] = s.Validation.Count, ["test"] = s.Test.Count },
        };
        return JsonSerializer.Serialize(info, new JsonSerializerOptions { WriteIndented = true }) + "\n";
    }

    static void PrintSummary(string dir, SynthMathOptions o, IReadOnlyList<SynthMathProblem>[] parts)
    {
        Console.WriteLine($"wrote {dir} (seed {o.Seed}, {(o.Direct ? "direct answers" : "step-by-step answers")}, values ≤ {o.MaxValue})");
        Console.WriteLine($"{"steps",-6} {"train",9} {"validation",11} {"test",9}");
        for (int s = o.MinSteps; s <= o.MaxSteps; s++)
        {
            int step = s;
            var c = parts.Select(p => p.Count(x => x.Steps == step)).ToArray();
            Console.WriteLine($"{s,-6} {c[0],9} {c[1],11} {c[2],9}");
        }
        Console.WriteLine($"{"total",-6} {parts[0].Count,9} {parts[1].Count,11} {parts[2].Count,9}");
    }
}
