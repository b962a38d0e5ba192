using System.Runtime.Intrinsics.X86;
using Recur.Training;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Parameter = TorchSharp.Modules.Parameter;

namespace Recur.Tests.Training;

/// <summary>
/// Muon's Newton–Schulz products on the fast kernel give exactly libtorch's bf16 <c>mm</c> (issue 13's time budget:
/// the demo's training must not change its numbers), and on a CPU without AVX-512 the kernel is what runs.
/// </summary>
public sealed class ExactBf16MatMulTests(ITestOutputHelper output)
{
    /// <summary>Values that are exactly bf16 numbers, as the kernel's inputs always are.</summary>
    static float[] Bf16Values(int count, int seed)
    {
        var rng = new Random(seed);
        var v = new float[count];
        for (int i = 0; i < v.Length; i++)
            v[i] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits((float)(rng.NextDouble() * 2 - 1) * MathF.Pow(2, rng.Next(-6, 3))) & unchecked((int)0xFFFF0000));
        return v;
    }

    [Theory]
    [InlineData(5, 37, 21)]   // k not a multiple of 4 or 16, n not a multiple of 16: every tail of the kernels
    [InlineData(16, 128, 64)]
    [InlineData(4, 352, 32)]  // the demo's MLP width: 64-blocks plus two 16-blocks
    [InlineData(3, 3, 17)]
    [InlineData(64, 128, 128)] // enough work to split the rows between two threads
    public void Kernels_add_in_the_reference_order_bit_for_bit(int m, int k, int n)
    {
        float[] a = Bf16Values(m * k, 1), b = Bf16Values(k * n, 2), bT = new float[n * k];
        for (int l = 0; l < k; l++) for (int j = 0; j < n; j++) bT[j * k + l] = b[l * n + j];
        var outputs = new Dictionary<ExactBf16MatMul.Order, float[]>();
        foreach (var order in Enum.GetValues<ExactBf16MatMul.Order>())
        {
            var bb = order == ExactBf16MatMul.Order.Blocked64 ? bT : b;
            var c = new float[m * n];
            ExactBf16MatMul.Multiply(order, a, bb, c, m, k, n);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                    Assert.Equal(BitConverter.SingleToInt32Bits(ExactBf16MatMul.Dot(order, a, bb, i, j, k, n)), BitConverter.SingleToInt32Bits(c[i * n + j]));
            outputs[order] = c;
            var split = new float[m * n];
            ExactBf16MatMul.Multiply(order, a, bb, split, m, k, n, threads: 2);
            Assert.Equal(c, split);
        }
        // The orders are what the test pins: with these values (a wide range of magnitudes) they round differently.
        if (k >= 37)
        {
            Assert.NotEqual(outputs[ExactBf16MatMul.Order.Interleaved4], outputs[ExactBf16MatMul.Order.Sequential]);
            Assert.NotEqual(outputs[ExactBf16MatMul.Order.Interleaved4], outputs[ExactBf16MatMul.Order.Blocked64]);
            Assert.NotEqual(outputs[ExactBf16MatMul.Order.Sequential], outputs[ExactBf16MatMul.Order.Blocked64]);
        }
    }

    /// <summary>The products of NS5 on the demo model's matrices ([rows, cols] before the transpose of tall ones), as (m, k, n).</summary>
    public static TheoryData<int, int, int> DemoProducts => new()
    {
        { 128, 128, 128 }, { 64, 128, 64 }, { 64, 64, 64 }, { 64, 64, 128 }, { 128, 352, 128 }, { 128, 128, 352 },
        { 128, 704, 128 }, { 128, 128, 704 }, { 128, 256, 128 }, { 128, 128, 256 },
    };

    [Theory, MemberData(nameof(DemoProducts))]
    public void Matmul_returns_libtorchs_bits_in_every_layout(int m, int k, int n)
    {
        using var scope = NewDisposeScope();
        // Magnitudes spread over 2^−6 … 2^2 make the summation orders round differently often (plain randn rarely does).
        var a = tensor(Bf16Values(m * k, m + k), [m, k]).to(ScalarType.BFloat16);
        var b = tensor(Bf16Values(k * n, n + 1), [k, n]).to(ScalarType.BFloat16);
        var mm = new ExactBf16MatMul();
        foreach (var (x, y) in new[] { (a, b), (a.t().contiguous().t(), b), (a, b.t().contiguous().t()), (a.t().contiguous().t(), b.t().contiguous().t()) })
            for (int call = 0; call < 2; call++) // the first call checks the shape, the second uses the verdict
                Assert.True(ExactBf16MatMul.SameBits(x.mm(y), mm.MatMul(x, y)), $"[{m}x{k}]·[{k}x{n}], call {call + 1}");
        output.WriteLine($"kernel products {mm.KernelProducts}, shapes left on libtorch {mm.MismatchedShapes}");
        // Where libtorch has no oneDNN bf16 path (no AVX-512), its reference kernel sums in the order the kernel keeps.
        if (ExactBf16MatMul.Supported && !Avx512BW.IsSupported)
        {
            Assert.Equal(0, mm.MismatchedShapes);
            Assert.Equal(4, mm.KernelProducts);
        }
    }

    [Theory]
    [InlineData(352, 128)] // tall: NS5 transposes, so the first iteration multiplies strided views
    [InlineData(128, 352)]
    [InlineData(64, 128)]
    [InlineData(128, 256)]
    public void Newton_schulz_is_bit_identical_with_the_kernel(int rows, int cols)
    {
        using var scope = NewDisposeScope();
        var grad = randn(rows, cols, generator: new Generator(3));
        var mm = new ExactBf16MatMul();
        var fast = Muon.NewtonSchulz5(grad, matmul: mm);
        var again = Muon.NewtonSchulz5(grad, matmul: mm); // every shape checked by now: kernel only
        var reference = Muon.NewtonSchulz5(grad);
        Assert.True(ExactBf16MatMul.SameBits(reference, fast));
        Assert.True(ExactBf16MatMul.SameBits(reference, again));
    }

    [Fact]
    public void Muon_steps_equal_the_libtorch_products_update_bit_for_bit()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var w0 = Recur.Model.Scalars.Mul(randn(352, 128, generator: g), 0.05);
        var w = new Parameter(w0.clone());
        var reference = w0.clone();
        var momentum = zeros_like(w0);
        var opts = new MuonOptions(0.01, 1e-4, 0.95);
        using var muon = new Muon([("w", w)], opts);
        for (int step = 0; step < 3; step++)
        {
            var grad = randn(352, 128, generator: g);
            w.grad = grad.clone();
            muon.Step();
            muon.ZeroGrad();
            using (no_grad())
            {
                var o = Muon.Update(grad, momentum, opts.Momentum, opts.Nesterov, opts.NsSteps, opts.Coefficients); // libtorch's mm
                ApplyUpdate(reference, o, opts);
            }
            Assert.Equal(reference.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits), w.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits));
        }
        if (ExactBf16MatMul.Supported && !Avx512BW.IsSupported) Assert.True(muon.MatMul.KernelProducts > 0);
    }

    /// <summary>Muon's parameter update, as Muon.Step applies it.</summary>
    static void ApplyUpdate(Tensor p, Tensor o, MuonOptions opts)
    {
        using Scalar decay = 1 - opts.LearningRate * opts.WeightDecay, step = -opts.LearningRate;
        p.mul_(decay);
        p.add_(o.reshape(p.shape), alpha: step);
    }
}
