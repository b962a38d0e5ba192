using Recur.Cli;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// Program.cs's early guess (TorchFreeRoute.MayApply): a command line that cannot take the libtorch-free path starts
/// loading libtorch at once, before the command line is parsed; one that might leaves it to the exact decision.
/// </summary>
public class TorchFreeRouteTests
{
    [Fact]
    public void Command_lines_that_need_libtorch_start_it_early()
    {
        string plain = ChatModels.Plain();
        Assert.True(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a"]));
        Assert.True(TorchFreeRoute.MayApply(["generate", $"--model={plain}", "--prompt-ids", "1 2", "--temperature", "0", "--dtype", "bf16", "--device", "cpu"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a", "--temperature", "0.7"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a", "--temperature=0.7"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a", "--speculate", "draft=1,k=2"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a", "--recurrences", "4"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a", "--device", "cuda"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a", "--dtype", "fp16"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", plain, "--prompt", "a", "--prompt", "b"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", ChatModels.Recurrent(), "--prompt", "a"]));
        Assert.False(TorchFreeRoute.MayApply(["generate", "--model", Path.Combine(plain, "missing"), "--prompt", "a"]));
        Assert.False(TorchFreeRoute.MayApply(["chat", "--model", plain]));
    }
}

/// <summary>
/// The native generate front (src/Recur.Generate) cannot run libtorch: GenerateCommand calls its hand-off (which
/// replaces the process with the full CLI) wherever the libtorch-free path does not apply, before anything loads
/// libtorch. Process-wide hook, hence its own non-parallel collection.
/// </summary>
[Collection(ProcessSwitchesCollection.Name)]
public class LibtorchHandOffTests
{
    [Fact]
    public void Generate_hands_off_before_loading_libtorch_when_the_libtorch_free_path_does_not_apply()
    {
        string plain = ChatModels.Plain(); // stored in fp32
        TorchFreeRoute.LibtorchPathHandOff = () => throw new OperationCanceledException("handed off");
        try
        {
            int Run(params string[] extra) =>
                CliRoot.Create("generate").Parse(["generate", "--model", plain, "--prompt-ids", "1 2 3", "--max-new-tokens", "2", "--output-ids", .. extra]).Invoke();
            // OperationCanceledException is what Common.Run turns into exit code 130: the hook ran, and nothing after it.
            Assert.Equal(130, Run("--temperature", "0.7", "--seed", "1"));
            Assert.Equal(130, Run("--dtype", "bf16"));
        }
        finally { TorchFreeRoute.LibtorchPathHandOff = null; }
    }
}
