using System.CommandLine;
using Recur.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Cli;

/// <summary>Options shared by several verbs, and the error boundary every verb runs inside.</summary>
static class Common
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Show stack traces on errors", Recursive = true };

    public static Option<string> DeviceOption() => new("--device") { Description = "cpu or cuda[:N]", DefaultValueFactory = _ => "cpu" };
    public static Option<string?> DTypeOption(string? @default = null) => new("--dtype") { Description = "Compute dtype: fp32 or bf16 (default: fp32)", DefaultValueFactory = _ => @default };
    public static Option<int> ThreadsOption() => new("--threads") { Description = "CPU threads for tensor ops (default: all cores)", DefaultValueFactory = _ => 0 };

    public static Device ParseDevice(string name)
    {
        if (name == "cpu") return CPU;
        if (name.StartsWith("cuda", StringComparison.Ordinal))
        {
            if (!cuda.is_available()) throw new RecurUserException($"--device {name}: CUDA is not available (this build uses the CPU TorchSharp package, or no GPU is visible; build with -p:TorchBackend=cuda)");
            return device(name);
        }
        throw new RecurUserException($"--device must be cpu or cuda[:N] (got '{name}')");
    }

    public static ScalarType ParseDType(string? name) => name is null ? ScalarType.Float32 : HfCheckpoint.ParseDType(name);

    public static void SetThreads(int threads)
    {
        if (threads < 0) throw new RecurUserException($"--threads must be ≥ 0 (got {threads})");
        torch.set_num_threads(threads > 0 ? threads : Environment.ProcessorCount);
    }

    /// <summary>Runs a verb: user errors become one line on stderr and exit code 1; anything else exit code 2.</summary>
    public static int Run(ParseResult parse, Func<int> body)
    {
        bool verbose = parse.GetValue(Verbose);
        try { return body(); }
        catch (Exception e) { return Report(e, verbose); }
    }

    /// <summary>Prints an error as <see cref="Run"/> does (after <paramref name="prefix"/>, e.g. "rank 1: ") and returns its exit code.</summary>
    public static int Report(Exception e, bool verbose, string prefix = "")
    {
        switch (e)
        {
            case RecurUserException:
            case IOException or UnauthorizedAccessException:
                Console.Error.WriteLine($"error: {prefix}{e.Message}");
                if (verbose) Console.Error.WriteLine(e);
                return 1;
            case OperationCanceledException:
                Console.Error.WriteLine($"{prefix}interrupted");
                return 130;
            default:
                Console.Error.WriteLine($"error: {prefix}{e.GetType().Name}: {e.Message.Split('\n')[0]}");
                Console.Error.WriteLine(verbose ? e.ToString() : "(run with --verbose for details)");
                return 2;
        }
    }

    /// <summary>Sets T and the s_0 generator on a recurrent model; notes that T does not apply to a plain one.</summary>
    public static void ConfigureRecurrence(Recur.Model.ICausalLM m, int? recurrences, long seed)
    {
        if (m is Recur.Model.RecurrentModel rm)
        {
            if (recurrences is { } t) rm.Recurrences = t;
            rm.StateGenerator = new Generator((ulong)seed);
        }
        else if (recurrences is not null)
            Console.Error.WriteLine("note: --recurrences ignored: this is not a recurrent model");
    }

    /// <summary>The first Ctrl-C cancels the running work (the caller stops cleanly); a second one ends the process.</summary>
    public static CancellationTokenSource CancelOnCtrlC()
    {
        var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            if (cts.IsCancellationRequested) return;
            e.Cancel = true;
            cts.Cancel();
        };
        return cts;
    }

    public static string Human(double bytes)
    {
        string[] u = ["B", "KiB", "MiB", "GiB", "TiB"];
        int i = 0;
        while (bytes >= 1024 && i < u.Length - 1) { bytes /= 1024; i++; }
        return $"{bytes:0.##} {u[i]}";
    }

    public static string Count(long n) => n >= 1_000_000_000 ? $"{n / 1e9:0.###}B" : n >= 1_000_000 ? $"{n / 1e6:0.###}M" : n >= 1000 ? $"{n / 1e3:0.###}K" : n.ToString();
}
