// The native front of `recur generate` (see the project file): runs the CLI's own generate command where it takes the
// libtorch-free path, and replaces itself with the full CLI (execv, same arguments and environment) for everything
// else — any other verb, a command line the libtorch-free path cannot take (TorchFreeRoute.MayApply, then Open), a
// malformed one, help or version — so that every output and error is the CLI's. The launcher names the full CLI in
// RECUR_CLI.
//
// Why: a CoreCLR process needs ~45 MB of runtime, JIT and code before it reads a weight (System.Private.CoreLib,
// libcoreclr, libclrjit and the JIT's code), which at the stories110M shape in bf16 is more than 1.2× the 219 MB file
// allows; compiled ahead of time the same command needs ~30 MiB besides the weights (bench/RESULTS.md, "Start-up
// memory of the libtorch-free path").
using System.Runtime.InteropServices;
using Recur.Cli;
using Recur.Diagnostics;

StartupTrace.Mark("main (native front)");
if (!TorchFreeRoute.MayApply(args)) return HandOff.Exec(args);
TorchFreeRoute.LibtorchPathHandOff = () => HandOff.Exec(args);
var parsed = CliRoot.Root(GenerateCommand.Create()).Parse(args);
StartupTrace.Mark("command line parsed");
if (parsed.Errors.Count > 0 || args.Any(a => a is "-h" or "--help" or "-?" or "help" or "--version")) return HandOff.Exec(args);
return parsed.Invoke();

static partial class HandOff
{
    /// <summary>Replaces this process with the full CLI (RECUR_CLI) run on <paramref name="args"/>; returns only on failure.</summary>
    public static int Exec(string[] args)
    {
        string? cli = Environment.GetEnvironmentVariable("RECUR_CLI");
        if (string.IsNullOrEmpty(cli))
        {
            Console.Error.WriteLine("error: recur-generate runs through ./recur, which names the full CLI in RECUR_CLI; run ./recur generate …");
            Environment.Exit(2);
        }
        Console.Out.Flush();
        Console.Error.Flush();
        var argv = new IntPtr[args.Length + 2];
        argv[0] = Marshal.StringToCoTaskMemUTF8(cli);
        for (int i = 0; i < args.Length; i++) argv[i + 1] = Marshal.StringToCoTaskMemUTF8(args[i]);
        execv(argv[0], argv);
        Console.Error.WriteLine($"error: cannot run the CLI '{cli}' (RECUR_CLI): {Marshal.GetLastPInvokeErrorMessage()}");
        Environment.Exit(2);
        return 2;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int execv(IntPtr path, IntPtr[] argv);
}
