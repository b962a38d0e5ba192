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
        cmd.Subcommands.Add(VariableChainsCommand());
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

    static Command VariableChainsCommand()
    {
        var output = new Option<string>("--out") { Description = "Output folder for train.jsonl, test.jsonl and variable-chains.json", Required = true };
        var task = new Option<string>("--task") { Description = "sum (running sum) or chains (interleaved assignment chains)", DefaultValueFactory = _ => "sum" };
        var train = new Option<int>("--train") { Description = "Training rows", DefaultValueFactory = _ => 10_000 };
        var trainK = new Option<string>("--train-k") { Description = "Hidden hops k of the training rows that are not worked, A-B", DefaultValueFactory = _ => "1-4" };
        var worked = new Option<double>("--worked") { Description = "Fraction of training rows with every value written", DefaultValueFactory = _ => 0.5 };
        var directFrac = new Option<double>("--direct") { Description = "Fraction of the other training rows with no value written (the rest write a prefix)", DefaultValueFactory = _ => 0.0 };
        var queries = new Option<int>("--queries") { Description = "Queries per chains training row (the last one is graded)", DefaultValueFactory = _ => 3 };
        var testK = new Option<string>("--test-k") { Description = "k of the held-out direct test problems, A-B", DefaultValueFactory = _ => "1-12" };
        var perK = new Option<int>("--test-per-k") { Description = "Test problems per k (for the sum at most a quarter of the 10^(k+1) distinct ones)", DefaultValueFactory = _ => 100 };
        var chains = new Option<int>("--chains") { Description = "Chains interleaved in one chains problem", DefaultValueFactory = _ => 3 };
        var seed = new Option<ulong>("--seed") { Description = "Seed; the same seed and options give byte-identical files", DefaultValueFactory = _ => 1 };
        var force = new Option<bool>("--force") { Description = "Replace the files in a non-empty output folder" };
        var cmd = new Command("variable-chains", "Write seeded depth-bound problems (variable chains or running sums mod 10; docs/variable-chains.md) as JSONL")
        {
            output, task, train, trainK, worked, directFrac, queries, testK, perK, chains, seed, force,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string dir = parse.GetValue(output)!;
            string t = parse.GetValue(task)!;
            if (t is not ("chains" or "sum")) throw new RecurUserException($"--task must be chains or sum (got '{t}')");
            var (tlo, thi) = ParseRange(parse.GetValue(trainK)!, "--train-k");
            var (elo, ehi) = ParseRange(parse.GetValue(testK)!, "--test-k");
            double w = parse.GetValue(worked), d = parse.GetValue(directFrac);
            if (w is < 0 or > 1) throw new RecurUserException($"--worked must be in [0, 1] (got {w})");
            if (d is < 0 or > 1) throw new RecurUserException($"--direct must be in [0, 1] (got {d})");
            if (parse.GetValue(train) < 0 || parse.GetValue(perK) < 1 || parse.GetValue(queries) < 1)
                throw new RecurUserException("--train must be ≥ 0, --test-per-k and --queries ≥ 1");
            var o = new VariableChainsOptions(t == "sum" ? DepthTaskKind.Sum : DepthTaskKind.Chains, Chains: parse.GetValue(chains)).Validate();
            if (File.Exists(dir)) throw new RecurUserException($"--out {dir}: is a file, expected a folder");
            if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any() && !parse.GetValue(force))
                throw new RecurUserException($"--out {dir}: folder is not empty (use --force to overwrite)");
            ulong s = parse.GetValue(seed);
            var test = VariableChains.TestSet(o, s, elo, ehi, parse.GetValue(perK));
            var rows = VariableChains.TrainRows(o, s, 1, parse.GetValue(train), w, d, tlo, thi, parse.GetValue(queries), new HashSet<string>(test.Select(p => p.Key)));
            Directory.CreateDirectory(dir);
            AtomicFile.Write(Path.Combine(dir, "train.jsonl"), fs => VariableChains.WriteJsonl(fs, rows));
            AtomicFile.Write(Path.Combine(dir, "test.jsonl"), fs => VariableChains.WriteJsonl(fs, test));
            var info = new Dictionary<string, object>
            {
                ["generator"] = "variable-chains", ["format_version"] = VariableChains.FormatVersion, ["task"] = t, ["seed"] = s,
                ["chains"] = o.Chains, ["train_k"] = $"{tlo}-{thi}", ["worked"] = w, ["direct"] = d, ["queries"] = parse.GetValue(queries),
                ["test_k"] = $"{elo}-{ehi}", ["test_per_k"] = parse.GetValue(perK),
                ["counts"] = new Dictionary<string, int> { ["train"] = rows.Count, ["test"] = test.Count },
            };
            AtomicFile.WriteAllText(Path.Combine(dir, "variable-chains.json"), JsonSerializer.Serialize(info, new JsonSerializerOptions { WriteIndented = true }) + "\n");
            Console.WriteLine($"wrote {dir} ({t}, seed {s}): {rows.Count} training rows ({rows.Count(p => p.Form == DepthRowForm.Worked)} worked), {test.Count} test problems (k {elo}–{ehi})");
            return 0;
        }));
        return cmd;
    }

    static (int Lo, int Hi) ParseRange(string text, string flag)
    {
        var m = Regex.Match(text.Trim(), @"^(\d{1,3})(?:-(\d{1,3}))?$");
        if (!m.Success) throw new RecurUserException($"{flag} must be a range A-B or a single number, e.g. 1-4 (got '{text}')");
        int lo = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        int hi = m.Groups[2].Success ? int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture) : lo;
        if (lo < 1 || hi < lo || hi > 24) throw new RecurUserException($"{flag} must be A-B with 1 ≤ A ≤ B ≤ 24 (got '{text}')");
        return (lo, hi);
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
