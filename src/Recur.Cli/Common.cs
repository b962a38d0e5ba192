using System.Runtime.InteropServices;
using System.CommandLine;
using Recur.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Cli;

/// <summary>Options shared by several verbs, and the error boundary every verb runs inside.</summary>
static class Common
{
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Show stack traces on errors", Recursive = true };

    // One vocabulary across verbs (README "Common options"): --device and --dtype are where and in what precision the
    // model computes; the dtype a verb writes to disk is --save-dtype; --force always means "replace what is already at
    // the output". Defaults are shown as "[default: …]", by System.CommandLine for a DefaultValueFactory and in the
    // description otherwise (tests/Recur.Tests/Cli/HelpConventionTests.cs checks all verbs).
    public static Option<string> DeviceOption() => new("--device") { Description = "cpu or cuda[:N]", DefaultValueFactory = _ => "cpu" };
    public static Option<string> DTypeOption() => new("--dtype") { Description = "Compute dtype: fp32 or bf16", DefaultValueFactory = _ => "fp32" };
    public static Option<string> SaveDTypeOption() => new("--save-dtype") { Description = "Stored dtype: fp32, bf16 or fp16", DefaultValueFactory = _ => "fp32" };
    public static Option<int> ThreadsOption() => new("--threads") { Description = "CPU threads for tensor ops (0: all cores)", DefaultValueFactory = _ => 0 };

    /// <summary>
    /// A generation budget that fits the model: <paramref name="given"/> when the user set it, else the verb's default
    /// capped at a quarter of the context (a 512-token default would leave no room for the prompt of a 256-token
    /// model); a note says when the cap applied.
    /// </summary>
    public static int MaxNewTokens(int? given, int @default, int context, TextWriter notes)
    {
        if (given is { } g)
        {
            if (g < 1) throw new RecurUserException($"--max-new-tokens must be ≥ 1 (got {g})");
            return g;
        }
        int fit = Recur.Engine.GenerationBudget.Fit(@default, context);
        if (fit == @default) return @default;
        notes.WriteLine($"note: --max-new-tokens {fit}: a quarter of the model's {context}-token context (the default, {@default}, does not fit it)");
        return fit;
    }

    /// <summary>Help text of a --max-new-tokens whose default depends on the model.</summary>
    public static string MaxNewTokensDefault(int @default) => $"[default: {@default}, at most a quarter of the model's context]";

    public static Device ParseDevice(string name) => Recur.Model.Devices.Parse(name, "--device");

    public static ScalarType ParseDType(string? name) => name is null ? ScalarType.Float32 : HfCheckpoint.ParseDType(name);

    /// <summary>Verbs that load libtorch (all but tokenize, data, flops, download and help).</summary>
    public static bool RunsModel(string verb) =>
        verb is "generate" or "chat" or "serve" or "eval" or "info" or "train" or "retrofit" or "convert" or "init" or "demo";

    static int _preloading;

    /// <summary>
    /// Loads libtorch on a thread-pool thread (once per process; later calls do nothing); the first torch call elsewhere
    /// waits for it, and a failure surfaces there.
    /// </summary>
    public static void PreloadTorch()
    {
        if (Interlocked.Exchange(ref _preloading, 1) == 1) return;
        ThreadPool.UnsafeQueueUserWorkItem(_ => Load(), null);
        // Its own method: the call into libtorch is compiled only when the work item runs.
        static void Load()
        {
            try { torch.get_num_threads(); Diagnostics.StartupTrace.Mark("libtorch loaded"); }
            catch (Exception e) when (e is DllNotFoundException or TypeInitializationException or ExternalException or NotSupportedException) { }
        }
    }

    /// <summary>The thread count a --threads value asks for (0: all cores), checked.</summary>
    public static int ThreadCount(int threads)
    {
        // More threads than a few per core only add start-up and hand-off cost (100000 took minutes to start).
        int most = Math.Max(64, 4 * Environment.ProcessorCount);
        if (threads < 0 || threads > most)
            throw new RecurUserException($"--threads must be between 0 (all cores) and {most} (got {threads}; this machine has {Environment.ProcessorCount} cores)");
        return threads > 0 ? threads : Environment.ProcessorCount;
    }

    public static void SetThreads(int threads) => torch.set_num_threads(ThreadCount(threads));

    /// <summary>
    /// The flag for each API parameter the library names in its errors (<see cref="RecurUserException.Parameters"/>):
    /// the library says <c>MaxNewTokens</c> or <c>overwrite: true</c>, the command line says --max-new-tokens or --force.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> Flags = new Dictionary<string, string>
    {
        ["overwrite: true"] = "--force",
        ["MaxNewTokens"] = "--max-new-tokens",
        ["Temperature"] = "--temperature",
        ["TopK"] = "--top-k",
        ["TopP"] = "--top-p",
        ["Shape"] = "--shape",
        ["Layers"] = "--layers",
        ["ChatTemplate"] = "--chat-template",
        ["SkipBadLines"] = "--skip-bad-lines",
        ["override"] = "--set",
        ["Recurrences"] = "--recurrences",
        ["RecurLoadOptions.Recurrences"] = "--recurrences",
        ["RecurLoadOptions.ChatTemplate"] = "--chat-template",
        ["RecurLoadOptions.Tokenizer"] = "--tokenizer",
        ["RecurLoadOptions.Device"] = "--device",
        ["HubClient.DownloadAsync"] = "recur download --out DIR",
        ["ServerOptions.Host"] = "--host",
        ["ServerOptions.Port"] = "--port",
        ["ServerOptions.MaxBatch"] = "--max-batch",
        ["revision"] = "--revision",
        ["include:"] = "--include",
        ["force: true"] = "--force",
        ["Count"] = "--count",
        ["MinSteps-MaxSteps"] = "--steps",
        ["MaxValue"] = "--max-value",
        ["ValidationFraction"] = "--val-fraction",
        ["TestFraction"] = "--test-fraction",
        ["Speculate"] = "--speculate",
    };

    /// <summary>
    /// A library note in the command line's terms: the load options it names (<c>RecurLoadOptions.Recurrences
    /// ignored: …</c>) become flags. Only qualified names are replaced, so that ordinary words in a note stay.
    /// </summary>
    public static string Note(string text) =>
        RecurUserException.Rename(text, Flags.Keys.Where(k => k.Contains('.', StringComparison.Ordinal)), Flags);

    /// <summary>An error's one-line message in the command line's terms (flags instead of API parameter names).</summary>
    public static string Describe(Exception e) => e is RecurUserException u ? u.MessageWith(Flags) : e.Message;

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
                Console.Error.WriteLine($"error: {prefix}{Describe(e)}");
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

    /// <summary>
    /// A recurrent model seen at T (null: its default) with s_0 drawn from <paramref name="seed"/> (the generator lives
    /// as long as the process); a plain model as it is, with a note that T does not apply to it.
    /// </summary>
    public static Recur.Model.ICausalLM AtRecurrence(Recur.Model.ICausalLM m, int? recurrences, long seed)
    {
        if (m is Recur.Model.RecurrentModel rm)
            return rm.At(Recur.Model.Recurrence.Fixed(recurrences is { } t ? CheckRecurrences(t) : rm.DefaultRecurrences, new Generator((ulong)seed)));
        if (recurrences is not null)
            Console.Error.WriteLine("note: --recurrences ignored: this is not a recurrent model");
        return m;
    }

    /// <summary>A --recurrences value: 1 to <see cref="WeightCheck.MaxRecurrence"/> (the KV cache holds p + r·T + c slots).</summary>
    public static int CheckRecurrences(int t) => t is >= 1 and <= WeightCheck.MaxRecurrence ? t
        : throw new RecurUserException($"--recurrences must be between 1 and {WeightCheck.MaxRecurrence} (got {t})");

    /// <summary>
    /// The command as the user typed it, for hints such as "continue with: ./recur train --resume DIR": the ./recur
    /// script passes its own name in RECUR_COMMAND; the dotnet tool is "recur"; a direct run is "dotnet …/Recur.Cli.dll".
    /// </summary>
    public static string CommandName()
    {
        if (Environment.GetEnvironmentVariable("RECUR_COMMAND") is { Length: > 0 } c) return c;
        string? process = Environment.ProcessPath;
        if (process is not null && Path.GetFileNameWithoutExtension(process) == "dotnet" && Environment.GetCommandLineArgs() is [var dll, ..] && dll.EndsWith(".dll", StringComparison.Ordinal))
            return $"dotnet {dll}";
        return "recur";
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

    /// <summary>
    /// A Spectre console on <paramref name="output"/> (default: the current Console.Out, so redirection is honoured).
    /// Piped output has no width to fit and Spectre would assume 80 columns and fold tables, so it gets 200.
    /// </summary>
    public static Spectre.Console.IAnsiConsole OutConsole(TextWriter? output = null, bool? redirected = null)
    {
        var console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings { Out = new Spectre.Console.AnsiConsoleOutput(output ?? Console.Out) });
        if (redirected ?? (Console.IsOutputRedirected || !console.Profile.Capabilities.Interactive)) console.Profile.Width = 200;
        return console;
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
