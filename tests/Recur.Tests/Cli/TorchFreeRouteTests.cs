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
