using Xunit;

namespace Recur.Tests.Support;

/// <summary>Tests that swap the process-wide Console.Out/Error: nothing else may run beside them.</summary>
[CollectionDefinition("Console", DisableParallelization = true)]
public sealed class ConsoleCollection;

/// <summary>
/// Tests that flip a process-wide switch (Gemv.NativeBf16.Enabled) or collect garbage constantly (Support/Collector.cs):
/// a test running beside them would take the other path without knowing, or have anything it leaves to the GC freed
/// in the middle of a libtorch call.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ProcessSwitchesCollection
{
    public const string Name = "ProcessSwitches";
}

/// <summary>
/// Tests that start other processes which train with all cores (the demo smoke run, MPI ranks). They run on their
/// own: libtorch's OpenMP threads slow down by an order of magnitude when the cores are oversubscribed.
/// </summary>
[CollectionDefinition("Exclusive", DisableParallelization = true)]
public sealed class ExclusiveCollection;
