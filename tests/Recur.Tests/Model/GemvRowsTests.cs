using Recur.Model;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>
/// The multi-row kernel of the speculative verify (GemvRows) against the one-row kernel plain decoding uses
/// (Gemv.ProductRows with one row): every output bit for bit, for odd sizes, sizes that are not multiples of the
/// vector width, 1 to 9 input rows, stacked matrices, fp32 and bf16 weights.
/// </summary>
public class GemvRowsTests
{
    public static TheoryData<int, int, string> Shapes()
    {
        var data = new TheoryData<int, int, string>();
        foreach (var (outF, inF) in new[] { (1, 1), (3, 5), (2, 16), (5, 17), (7, 33), (9, 100), (64, 128), (33, 257), (130, 352), (65, 768) })
            foreach (var dtype in new[] { "fp32", "bf16" })
                data.Add(outF, inF, dtype);
        return data;
    }

    /// <summary>Inputs with a wide spread of magnitudes, so that a different summation order shows in the last bits.</summary>
    static float[] Inputs(int count, int cols, long seed)
    {
        var g = new Random((int)seed);
        var x = new float[count * cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((g.NextDouble() * 2 - 1) * Math.Pow(10, g.Next(-3, 3)));
        return x;
    }

    static Tensor[] Weights(int[] rows, int cols, string dtype, long seed)
    {
        manual_seed(seed);
        return [.. rows.Select(r => (randn(r, cols) * exp(randn(r, cols))).to(dtype == "bf16" ? ScalarType.BFloat16 : ScalarType.Float32))];
    }

    static float[] OneRowAtATime(Gemv.Matrix[] ms, float[] x, int count, int outputs)
    {
        int cols = ms[0].Cols;
        var y = new float[count * outputs];
        for (int i = 0; i < count; i++)
        {
            // FastDecode.Project with one row: plain decoding's product (Gemv.ProductRows, batch 1).
            var yi = new float[outputs];
            FastDecode.Project(ms, x.AsSpan(i * cols, cols).ToArray(), yi, 1);
            yi.CopyTo(y, i * outputs);
        }
        return y;
    }

    static float[] Together(Gemv.Matrix[] ms, float[] x, int count, int outputs)
    {
        var y = new float[count * outputs];
        GemvRows.Product(ms, x, count, y);
        return y;
    }

    static void BitIdentical(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: output {i} is {actual[i]:R}, the one-row kernel gives {expected[i]:R}");
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Every_output_is_bit_for_bit_the_one_row_kernels(int outF, int inF, string dtype)
    {
        using var _ = no_grad();
        var ws = Weights([outF], inF, dtype, outF * 1000 + inF);
        var ms = ws.Select(Gemv.Matrix.Of).ToArray();
        for (int count = 1; count <= 9; count++)
        {
            var x = Inputs(count, inF, count * 7919 + inF);
            BitIdentical(OneRowAtATime(ms, x, count, outF), Together(ms, x, count, outF), $"{dtype} [{outF}×{inF}], {count} rows");
        }
        GC.KeepAlive(ws); // the matrices are read by address
    }

    [Theory]
    [InlineData("fp32", 128)]
    [InlineData("bf16", 128)]
    [InlineData("fp32", 131)]
    [InlineData("bf16", 131)]
    public void Stacked_matrices_split_over_threads_inside_a_matrix_stay_bit_identical(string dtype, int cols)
    {
        using var _ = no_grad();
        // q|k|v-like stack of 131 + 33 + 65 rows: odd row counts, thread splits inside a matrix.
        var ws = Weights([131, 33, 65], cols, dtype, 17);
        var ms = ws.Select(Gemv.Matrix.Of).ToArray();
        foreach (int count in new[] { 1, 2, 3, 4, 5, 8, 9 })
        {
            var x = Inputs(count, cols, count + 3);
            BitIdentical(OneRowAtATime(ms, x, count, 229), Together(ms, x, count, 229), $"{dtype} stack, {count} rows");
        }
        GC.KeepAlive(ws);
    }

    /// <summary>Exact equality is a strong check: the batch tiles (another summation order) do not pass it on these inputs.</summary>
    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void The_batch_tiles_of_another_summation_order_are_not_bit_identical(string dtype)
    {
        using var _ = no_grad();
        var ws = Weights([64], 352, dtype, 5);
        var ms = ws.Select(Gemv.Matrix.Of).ToArray();
        var x = Inputs(4, 352, 11);
        var batch = new float[4 * 64];
        FastDecode.Project(ms, x, batch, 4);
        var one = OneRowAtATime(ms, x, 4, 64);
        GC.KeepAlive(ws);
        Assert.Contains(Enumerable.Range(0, one.Length), i => BitConverter.SingleToInt32Bits(one[i]) != BitConverter.SingleToInt32Bits(batch[i]));
    }

    [Theory]
    [InlineData("fp32")]
    [InlineData("bf16")]
    public void Rows_agree_with_libtorch_linear(string dtype)
    {
        using var _ = no_grad();
        var w = Weights([96], 200, dtype, 23)[0];
        var x = Inputs(5, 200, 29);
        var ours = tensor(Together([Gemv.Matrix.Of(w)], x, 5, 96), [5, 96]);
        // The same values in double. fp32 accumulation errs by at most n·ε·Σ|w·x| (here 200 · 6e-8); the native bf16
        // kernel also rounds x to bf16 (2^-9 relative per term).
        var xs = tensor(x, [5, 200]).to(ScalarType.Float64);
        var wd = w.to(ScalarType.Float64);
        var exact = nn.functional.linear(xs, wd);
        var err = (ours.to(ScalarType.Float64) - exact).abs();
        var tol = nn.functional.linear(xs.abs(), wd.abs()) * ((dtype == "bf16" ? 1.0 / 256 : 0) + 2e-5);
        Assert.True(err.le(tol).all().item<bool>(), $"max error {err.max().item<double>()}");
    }

    [Fact]
    public void Mismatched_stacks_are_refused()
    {
        using var _ = no_grad();
        var a = Gemv.Matrix.Of(randn(4, 8));
        var b = Gemv.Matrix.Of(randn(4, 9));
        var x = new float[8];
        var y = new float[8];
        Assert.Throws<ArgumentException>(() => GemvRows.Product([a, b], x, 1, y));
        Assert.Throws<ArgumentException>(() => GemvRows.Product([a], x, 2, y)); // x too short for two rows
    }
}
