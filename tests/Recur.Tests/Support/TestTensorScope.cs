using System.Reflection;
using TorchSharp;
using Xunit.Sdk;
using static TorchSharp.torch;

[assembly: Recur.Tests.Support.TestTensorScope]

namespace Recur.Tests.Support;

/// <summary>
/// Every synchronous test runs inside a dispose scope of its own, so each tensor the test's code makes on its thread
/// is referenced until the test ends. Test code chains calls freely (<c>p.grad!.clone()</c>, <c>(a - b).abs().max()</c>):
/// outside a scope each intermediate tensor is held by nothing once its handle is passed to libtorch, and a collection
/// on any thread (another test allocating) could finalize it, freeing its memory in the middle of that call. That
/// crashed the test host (a general protection fault in at::TensorIteratorBase::build, a segfault in copy_impl), rarely
/// in a plain run and within a minute with a collection every millisecond (src/Recur/Model/Scalars.cs explains the
/// mechanism). Async tests are left out: after an await they continue on another thread, which this thread's scope
/// does not cover and must not be disposed from; their tensors are kept alive by the code itself.
/// </summary>
[AttributeUsage(AttributeTargets.Assembly)]
public sealed class TestTensorScopeAttribute : BeforeAfterTestAttribute
{
    // One attribute instance serves tests on many threads: the scopes are per thread, as TorchSharp's are.
    [ThreadStatic] static Stack<(MethodInfo Test, DisposeScope Scope)>? _open;

    static bool Synchronous(MethodInfo test) => test.ReturnType == typeof(void);

    /// <summary>The scope of the synchronous test running on this thread, if any.</summary>
    internal static DisposeScope? Current => _open is { Count: > 0 } open ? open.Peek().Scope : null;

    public override void Before(MethodInfo methodUnderTest)
    {
        if (Synchronous(methodUnderTest)) (_open ??= new()).Push((methodUnderTest, NewDisposeScope()));
    }

    public override void After(MethodInfo methodUnderTest)
    {
        if (Synchronous(methodUnderTest) && _open is { Count: > 0 } open && open.Peek().Test == methodUnderTest)
            open.Pop().Scope.Dispose();
    }
}
