using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>
/// Guards against TorchSharp Scalars that live for one native call only (Recur.Model.Ops.One explains the race):
/// the library and the CLI are compiled here and every call site that would build such a Scalar is listed.
/// </summary>
public sealed class ScalarLifetimeTests
{
    [Theory]
    [InlineData("Recur")]
    [InlineData("Recur.Cli")]
    public void No_torch_call_gets_a_scalar_that_nothing_keeps_alive(string project)
    {
        var found = ScalarLifetimeScan.Find(SourceCompilation.Project(project));
        Assert.True(found.Count == 0, $"{found.Count} call(s) pass TorchSharp a Scalar that nothing keeps alive "
            + "(hold it in a variable with `using`, a field, or use Ops.Add/Ops.One):\n" + string.Join("\n", found));
    }
}
