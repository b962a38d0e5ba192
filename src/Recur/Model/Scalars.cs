using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>
/// How numbers reach libtorch in Recur: through a <see cref="Scalar"/> that the caller keeps alive for the whole
/// native call — a process-lifetime field for constants, a <c>using var</c> around the call for values computed
/// per call (the helpers below), never a temporary.
/// </summary>
/// <remarks>
/// Why: a TorchSharp Scalar owns a native c10::Scalar and frees it in its finalizer (TorchSharp
/// src/TorchSharp/Scalar.cs: <c>~Scalar() => Dispose(false)</c> → <c>THSTorch_dispose_scalar</c>). A call such as
/// <c>t.add(u, alpha)</c> reads <c>alpha.Handle</c> (an IntPtr) and then P/Invokes (Tensor.Math.cs:
/// <c>THSTensor_add(Handle, target.Handle, alpha.Handle)</c>) with no <c>GC.KeepAlive</c>; from the JIT's point of
/// view the Scalar object is dead once its handle is loaded. When the Scalar is a temporary — an implicit
/// conversion (<c>t.mul(0.5)</c>, <c>masked_fill(m, double.NegativeInfinity)</c>, <c>clamp(-3.0, 3.0)</c>,
/// <c>arange(a, b)</c>), or one TorchSharp builds itself (<c>a + b</c> is <c>add(b, 1)</c>, <c>t * 2.0</c> is
/// <c>mul((Scalar)2.0)</c>, <c>square()</c> is <c>pow(2)</c>, <c>linalg.vector_norm(t, 2)</c> converts its order)
/// — a garbage collection on any thread can run its finalizer while libtorch is still reading the value: libtorch
/// then sees freed memory, which surfaced as <c>Expected false to be true … toFloat at c10/core/Scalar.h:140</c>
/// inside add_Tensor (once in 5,133 server requests) and can as well be a wrong constant or a crash.
/// tests/Recur.Tests/Model/ScalarLifetimeTests.cs compiles src/ and fails on any call that would make such a
/// temporary, so new code has to use this pattern.
/// <para>
/// Tensors have the same problem outside a dispose scope (Tensor.cs: <c>~Tensor() => Dispose(false)</c> →
/// <c>THSTensor_dispose</c>): in <c>p.copy_(Scalars.Mul(randn(shape), 0.02))</c> nothing holds randn's result while
/// mul reads it, nor the product while copy_ reads it, and a collection frees their TensorImpl and storage in the
/// middle of the call. It crashed the test host (a general protection fault in at::TensorIteratorBase::build, segfaults
/// in copy_impl and TensorImpl::_fw_grad) and otherwise gives wrong values. Inside a dispose scope the scope holds every
/// tensor made on its thread, so code that can run without a caller's scope (initialisation, loading and saving, the
/// public Logits and Loss helpers, generation's set-up) opens one or holds its tensors in <c>using</c> variables;
/// tests/Recur.Tests/Model/TensorLifetimeTests.cs repeats such code under constant collection.
/// </para>
/// </remarks>
public static class Scalars
{
    public static readonly Scalar One = 1, Zero = 0, MinusOne = -1, NegativeInfinity = double.NegativeInfinity, False = false;

    /// <summary>a + b (TorchSharp's a + b passes a temporary alpha of 1).</summary>
    public static Tensor Add(Tensor a, Tensor b) => a.add(b, One);

    /// <summary>a + b·alpha.</summary>
    public static Tensor Add(Tensor a, Tensor b, double alpha)
    {
        using var s = alpha.ToScalar();
        return a.add(b, s);
    }

    public static Tensor Add(Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.add(s, One);
    }

    // Integer overloads keep integer tensors integer (a double Scalar would promote int64 to float, as in PyTorch).
    public static Tensor Add(Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.add(s, One);
    }

    public static Tensor Mul(Tensor a, long b)
    {
        using var s = b.ToScalar();
        return a.mul(s);
    }

    public static Tensor Mul(Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.mul(s);
    }

    public static Tensor Div(Tensor a, double b)
    {
        using var s = b.ToScalar();
        return a.div(s);
    }

    /// <summary>a·a, the same values as a.square() (libtorch's pow(a, 2) multiplies), without its temporary exponent.</summary>
    public static Tensor Square(Tensor a) => a.mul(a);

    public static Tensor Clamp(Tensor a, double min, double max)
    {
        using var lo = min.ToScalar();
        using var hi = max.ToScalar();
        return a.clamp(lo, hi);
    }

    /// <summary>start, start + 1, …, stop − 1 as int64 on <paramref name="device"/>.</summary>
    public static Tensor Arange(long start, long stop, Device? device = null)
    {
        using var a = start.ToScalar();
        using var b = stop.ToScalar();
        return arange(a, b, One, ScalarType.Int64, device);
    }

    /// <summary>In place: t ← t·factor.</summary>
    public static Tensor MulInPlace(Tensor t, double factor)
    {
        using var s = factor.ToScalar();
        return t.mul_(s);
    }
}
