using System.Diagnostics;
using System.Text.Json.Nodes;
using Recur.Training;
using static TorchSharp.torch;

namespace Recur.Cli;

/// <summary>
/// Fault injection for the distributed tests: <c>RECUR_TEST_FAULT=RANK:BATCH:MODE</c> makes rank RANK, when it asks
/// for its BATCH-th training batch (1-based), die by SIGKILL (kill), stop responding (hang) or fail with an I/O
/// error (throw), so that the tests can check what the other ranks do. Not for users.
/// When <c>RECUR_TEST_FAULT_LOG</c> names a file, the fault is also recorded there before it strikes: mpiexec may
/// drop a killed rank's last forwarded output, a flushed file cannot lose it.
/// Internal on purpose: a test hook of tests/Recur.Tests/Distributed/MpiTrainTests.cs, not part of the command line or the
/// library (no help text or doc lists the variables; the type is visible only to the test assembly).
/// </summary>
internal sealed record TestFault(int Batch, string Mode)
{
    public const string Variable = "RECUR_TEST_FAULT";
    public const string LogVariable = "RECUR_TEST_FAULT_LOG";

    public static TestFault? FromEnvironment(int rank)
    {
        var v = Environment.GetEnvironmentVariable(Variable);
        if (string.IsNullOrEmpty(v)) return null;
        var p = v.Split(':');
        if (p.Length != 3 || !int.TryParse(p[0], out int r) || !int.TryParse(p[1], out int b) || p[2] is not ("kill" or "hang" or "throw"))
            throw new RecurUserException($"${Variable} must be RANK:BATCH:kill|hang|throw (got '{v}')");
        return r == rank ? new TestFault(b, p[2]) : null;
    }

    public Func<TrainRecipe, int, (IBatchSource, Func<IBatchSource>?)> Wrap(Func<TrainRecipe, int, (IBatchSource, Func<IBatchSource>?)> inner) =>
        (r, phase) => { var (train, val) = inner(r, phase); return (new Source(train, this), val); };

    sealed class Source(IBatchSource inner, TestFault fault) : IBatchSource
    {
        int _batches;

        public (Tensor Inputs, Tensor Labels) Next()
        {
            if (++_batches == fault.Batch)
            {
                string line = $"test fault: {fault.Mode} at batch {_batches}";
                if (Environment.GetEnvironmentVariable(LogVariable) is { Length: > 0 } log) File.AppendAllText(log, line + "\n");
                Console.Error.WriteLine(line);
                switch (fault.Mode)
                {
                    case "kill": Process.GetCurrentProcess().Kill(); break;
                    case "hang": Thread.Sleep(Timeout.Infinite); break;
                    default: throw new IOException("injected test fault");
                }
            }
            return inner.Next();
        }

        public JsonNode SaveState() => inner.SaveState();
        public void LoadState(JsonNode state) => inner.LoadState(state);
        public void Dispose() => inner.Dispose();
    }
}
