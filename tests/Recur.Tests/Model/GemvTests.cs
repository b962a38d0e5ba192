using Recur.Model;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

public class GemvTests
{
    public static TheoryData<int, int> Shapes => new()
    {
        // Row lengths that end in each loop of the kernels (and their prefetches past a row's end): whole 16-float steps (288),
        // steps then a scalar tail (47 = 2·16 + 15, 56 = 3·16 + 8), scalar only (5).
        { 1, 1 }, { 3, 5 }, { 7, 33 }, { 5, 47 }, { 9, 56 }, { 64, 288 }, { 130, 768 }, { 257, 100 }, { 768, 2048 },
    };

    [Theory, MemberData(nameof(Shapes))]
    public void Fp32_matches_linear(int outF, int inF)
    {
        using var _ = no_grad();
        var w = randn(outF, inF);
        var x = randn(1, 1, inF);
        Assert.True(Gemv.Handles(x, w));
        var ours = Gemv.Apply(x, w);
        var lib = nn.functional.linear(x, w.to(ScalarType.Float64).to(ScalarType.Float32));
        Assert.Equal(lib.shape, ours.shape);
        float scale = Math.Max(1f, lib.abs().max().item<float>());
        Assert.True((ours - lib).abs().max().item<float>() <= 1e-5f * scale * MathF.Sqrt(inF));
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Bf16_matches_an_fp32_product_of_the_same_values_to_one_rounding(int outF, int inF)
    {
        using var _ = no_grad();
        var w = randn(outF, inF).to(ScalarType.BFloat16);
        var x = randn(1, inF).to(ScalarType.BFloat16);
        var ours = Gemv.Apply(x, w);
        Assert.Equal(ScalarType.BFloat16, ours.dtype);
        var exact = nn.functional.linear(x.to(ScalarType.Float64), w.to(ScalarType.Float64));
        // fp32 accumulation then one round to bf16: within one bf16 ulp (2^-8 relative) of the exact value.
        var err = (ours.to(ScalarType.Float64) - exact).abs();
        var tol = exact.abs() * (1.0 / 256) + 1e-4 * Math.Sqrt(inF);
        Assert.True(err.le(tol).all().item<bool>(), $"max error {err.max().item<double>()}");
    }

    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Stacked_matrices_split_across_threads_inside_a_matrix(ScalarType dtype)
    {
        using var _ = no_grad();
        // 70 + 33 + 90 = 193 rows: the two threads' halves meet inside the second matrix.
        var ws = new[] { randn(70, 100).to(dtype), randn(33, 100).to(dtype), randn(90, 100).to(dtype) };
        var x = randn(100);
        var y = new float[193];
        Gemv.ProductStacked([.. ws.Select(Gemv.Matrix.Of)], Gemv.Prepare(x.data<float>().ToArray(), dtype == ScalarType.BFloat16), y);
        var expected = cat([.. ws.Select(w => nn.functional.linear(x.to(dtype).to(ScalarType.Float32), w.to(ScalarType.Float32)))], 0);
        float diff = (tensor(y) - expected).abs().max().item<float>();
        Assert.True(diff < (dtype == ScalarType.Float32 ? 1e-4f : 0.5f), $"max |Δ| {diff}");
    }

    /// <summary>
    /// A one-row product is handed out to the threads in chunks (KernelThreads.For): whoever computes a row, its value must
    /// be bit for bit the one-thread row loop's. Stacks long enough for many chunks per thread, in both dtypes.
    /// </summary>
    [Theory]
    [InlineData(ScalarType.Float32, 288)]
    [InlineData(ScalarType.BFloat16, 288)]
    [InlineData(ScalarType.Float32, 100)]
    [InlineData(ScalarType.BFloat16, 768)]
    public void Chunked_products_equal_the_one_thread_rows_bit_for_bit(ScalarType dtype, int cols)
    {
        using var _ = no_grad();
        bool bf16 = dtype == ScalarType.BFloat16;
        var ws = new[] { randn(1000, cols).to(dtype), randn(3001, cols).to(dtype) };
        Assert.True(4001 / Gemv.ChunkRows(cols, bf16) >= 4, "the stack must span several chunks");
        var x = randn(cols).data<float>().ToArray();
        var ms = ws.Select(Gemv.Matrix.Of).ToArray();
        var y = new float[4001];
        FastDecode.Project(ms, x, y, 1);
        // Each row alone, as a one-row matrix: one thread, no chunks.
        var expected = new float[4001];
        var input = Gemv.Prepare(x, bf16);
        int at = 0;
        foreach (var m in ms)
            for (int r = 0; r < m.Rows; r++, at++)
                Gemv.Product(m with { Address = m.Address + (nint)r * cols * (bf16 ? 2 : 4), Rows = 1 }, input, expected.AsSpan(at, 1));
        Assert.Equal(expected, y);
    }

    [Fact]
    public void Several_rows_grad_mode_and_mixed_dtypes_are_left_to_libtorch()
    {
        var w = randn(8, 16);
        Assert.False(Gemv.Handles(randn(2, 16), w));
        Assert.False(Gemv.Handles(randn(1, 16).to(ScalarType.BFloat16), w));
        Assert.False(Gemv.Handles(randn(1, 16), randn(16, 8).t()));           // not contiguous
        var wg = randn(8, 16).requires_grad_(true);
        Assert.False(Gemv.Handles(randn(1, 16), wg));                         // autograd needs the graph
        using (no_grad()) Assert.True(Gemv.Handles(randn(1, 16), wg));
        Assert.True(Gemv.Handles(randn(1, 16), w));
    }

    [Fact]
    public void A_single_position_narrowed_from_a_sequence_reads_the_right_row()
    {
        using var _ = no_grad();
        var h = randn(1, 5, 32);
        var w = randn(12, 32);
        var last = h.narrow(1, 4, 1);
        Assert.True(Gemv.Handles(last, w));
        Assert.True((Gemv.Apply(last, w) - nn.functional.linear(last, w)).abs().max().item<float>() < 1e-5);
    }
}

/// <summary>The native kernel against the managed one; switching the native kernel off is process-wide.</summary>
[Collection(ProcessSwitchesCollection.Name)]
public class NativeGemvTests
{
    [NativeBf16Theory, MemberData(nameof(GemvTests.Shapes), MemberType = typeof(GemvTests))]
    public void Native_bf16_kernel_matches_the_managed_one(int outF, int inF)
    {
        using var _ = no_grad();
        var w = randn(outF, inF).to(ScalarType.BFloat16);
        var x = randn(1, inF).to(ScalarType.BFloat16);
        var native = Gemv.Apply(x, w);
        Gemv.NativeBf16.Enabled = false;
        try
        {
            var managed = Gemv.Apply(x, w);
            // Same bf16 inputs, fp32 accumulation in another order: equal up to one bf16 rounding of the result.
            var err = (native.to(ScalarType.Float64) - managed.to(ScalarType.Float64)).abs();
            var tol = managed.to(ScalarType.Float64).abs() * (1.0 / 128) + 1e-3 * Math.Sqrt(inF);
            Assert.True(err.le(tol).all().item<bool>(), $"max difference {err.max().item<double>()}");
        }
        finally { Gemv.NativeBf16.Enabled = true; }
    }
}

/// <summary>A theory that is skipped (reported as such) when the native bf16 kernel is not loaded.</summary>
public sealed class NativeBf16TheoryAttribute : TheoryAttribute
{
    public NativeBf16TheoryAttribute()
    {
        if (!Gemv.NativeBf16.Loaded) Skip = "the native bf16 kernel is not built or this CPU lacks AVX-512 BF16";
    }
}

public class AttentionKernelTests
{
    public static TheoryData<int, bool, bool> Cases => new()
    {
        { 1, true, false }, { 2, true, false }, { 1, false, true }, { 2, false, true },
    };

    /// <summary>bf16 attention (the plain matmul–softmax–matmul form at these sizes) against fp32 SDPA.</summary>
    [Theory, MemberData(nameof(Cases))]
    public void Bf16_attention_matches_fp32_sdpa(int groups, bool causal, bool padded)
    {
        using var _ = no_grad();
        long b = 2, nkv = 2, nh = nkv * groups, s = 9, d = 16;
        var q = randn(b, nh, s, d); var k = randn(b, nkv, s, d); var v = randn(b, nkv, s, d);
        Tensor? mask = null;
        if (padded)
        {
            var real = ones(b, s, dtype: ScalarType.Bool); real[0, 0] = false; real[0, 1] = false;
            mask = Ops.Layout(b, s, 0, real, CPU).Mask;
        }
        var ours = Ops.Attend(q.to(ScalarType.BFloat16), k.to(ScalarType.BFloat16), v.to(ScalarType.BFloat16), mask, causal);
        Assert.Equal(ScalarType.BFloat16, ours.dtype);
        var ke = k.repeat_interleave(groups, 1); var ve = v.repeat_interleave(groups, 1);
        var reference = nn.functional.scaled_dot_product_attention(q, ke, ve, mask, 0.0, causal);
        float diff = (ours.to(ScalarType.Float32) - reference).abs().max().item<float>();
        Assert.True(diff < 0.05f, $"max |Δ| {diff}");
    }

    /// <summary>Gradients through bf16 attention (plain form, in-place masking) against fp32 SDPA's.</summary>
    [Theory, MemberData(nameof(Cases))]
    public void Bf16_attention_gradients_match_fp32_sdpa(int groups, bool causal, bool padded)
    {
        long b = 2, nkv = 2, nh = nkv * groups, s = 9, d = 16;
        var q = randn(b, nh, s, d); var k = randn(b, nkv, s, d); var v = randn(b, nkv, s, d); var g = randn(b, nh, s, d);
        Tensor? mask = null;
        if (padded)
        {
            var real = ones(b, s, dtype: ScalarType.Bool); real[0, 0] = false; real[0, 1] = false;
            mask = Ops.Layout(b, s, 0, real, CPU).Mask;
        }
        Tensor[] Grads(bool ours)
        {
            var (qq, kk, vv) = (q.clone().requires_grad_(true), k.clone().requires_grad_(true), v.clone().requires_grad_(true));
            var o = ours
                ? Ops.Attend(qq.to(ScalarType.BFloat16), kk.to(ScalarType.BFloat16), vv.to(ScalarType.BFloat16), mask, causal).to(ScalarType.Float32)
                : nn.functional.scaled_dot_product_attention(qq, kk.repeat_interleave(groups, 1), vv.repeat_interleave(groups, 1), mask, 0.0, causal);
            (o * g).sum().backward();
            return [qq.grad!, kk.grad!, vv.grad!];
        }
        var a = Grads(true);
        var r = Grads(false);
        for (int i = 0; i < 3; i++)
        {
            double rel = ((a[i] - r[i]).norm() / r[i].norm()).item<float>();
            Assert.True(rel < 0.03, $"gradient {"qkv"[i]}: relative difference {rel}");
        }
    }
}

public class KernelPoolTests
{
    /// <summary>
    /// A job posted right after a pool is made must run even when a helper thread starts late (it once read the
    /// generation itself and could sleep through the first job, hanging the caller). Many fresh pools, each with
    /// an immediate job, under a deadline.
    /// </summary>
    [Fact]
    public async Task The_first_job_of_a_fresh_pool_always_completes()
    {
        // Busy threads on every core make a late-starting helper likely.
        using var stop = new CancellationTokenSource();
        var busy = Enumerable.Range(0, Environment.ProcessorCount).Select(_ => new Thread(() => { while (!stop.IsCancellationRequested) Thread.SpinWait(100); }) { IsBackground = true }).ToList();
        busy.ForEach(t => t.Start());
        var task = Task.Run(() =>
        {
            for (int i = 0; i < 300; i++)
            {
                using var pool = new KernelPool(1);
                int ran = 0;
                pool.Run(2, _ => Interlocked.Increment(ref ran));
                Assert.Equal(2, ran);
            }
        });
        var finished = await Task.WhenAny(task, Task.Delay(TimeSpan.FromSeconds(60)));
        stop.Cancel();
        Assert.True(finished == task, "a job on a fresh pool never completed");
        await task;
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(100, 2, 7)]
    [InlineData(5, 2, 2)]
    [InlineData(1000, 3, 16)]
    [InlineData(64, 3, 64)]
    [InlineData(3, 4, 1)]
    public void A_range_job_runs_every_index_once(int count, int parts, int chunk)
    {
        using var pool = new KernelPool(3);
        for (int round = 0; round < 50; round++)
        {
            var hits = new int[count];
            pool.For(count, parts, chunk, (part, lo, hi) =>
            {
                Assert.InRange(part, 0, parts - 1);
                Assert.True(hi - lo <= chunk && lo < hi, $"chunk {lo}..{hi}");
                for (int i = lo; i < hi; i++) Interlocked.Increment(ref hits[i]);
            });
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    /// <summary>
    /// A helper that notices a range job late (held here, as a descheduled thread would be) must not hold the caller to
    /// its share: the caller takes every chunk, and the late helper then finds none left.
    /// </summary>
    [Fact]
    public void The_caller_takes_over_the_chunks_of_a_late_helper()
    {
        int armed = 0;
        using var release = new ManualResetEventSlim(false);
        // Only the range job's notice waits (Exchange): the helper notices the pool's closing job too.
        using var pool = new KernelPool(1, onJobNoticed: _ => { if (Interlocked.Exchange(ref armed, 0) == 1) release.Wait(); });
        Volatile.Write(ref armed, 1);
        var byPart = new int[2];
        int done = 0;
        pool.For(100, 2, 10, (part, lo, hi) =>
        {
            Interlocked.Add(ref byPart[part], hi - lo);
            if (Interlocked.Add(ref done, hi - lo) == 100) release.Set(); // every index ran: let the helper go
        });
        Assert.Equal([100, 0], byPart);
        WaitForTheHelper(pool, Environment.CurrentManagedThreadId); // past the hook before release is disposed
    }

    /// <summary>Runs two-part jobs until one's part 1 runs on the helper: a helper takes jobs in order, so it is then past every earlier one.</summary>
    static void WaitForTheHelper(KernelPool pool, int caller)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var next = new int[2];
            int helperRan = 0;
            pool.Run(2, t => { Interlocked.Increment(ref next[t]); if (t == 1 && Environment.CurrentManagedThreadId != caller) helperRan = 1; });
            Assert.Equal([1, 1], next);
            if (helperRan == 1) return;
            Assert.True(DateTime.UtcNow < deadline, "the helper never took part again");
            Thread.Sleep(1);
        }
    }

    /// <summary>
    /// A helper that has not started its part when the caller is done with part 0 (held here, as a descheduled or sleeping
    /// thread would be) must not hold the caller up: the caller runs that part itself and returns, and the helper, when it
    /// gets there, finds the part claimed and does not run it again.
    /// </summary>
    [Fact]
    public async Task The_caller_runs_the_part_of_a_helper_that_has_not_started()
    {
        int armed = 1;
        using var release = new ManualResetEventSlim(false);
        using var pool = new KernelPool(1, onJobNoticed: _ => { if (Interlocked.Exchange(ref armed, 0) == 1) release.Wait(); });
        var hits = new int[2];
        var threads = new int[2];
        int caller = Environment.CurrentManagedThreadId;
        var run = Task.Run(() => { threads[0] = Environment.CurrentManagedThreadId; pool.Run(2, t => { Interlocked.Increment(ref hits[t]); if (t == 1) threads[1] = Environment.CurrentManagedThreadId; }); });
        bool returned = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(30))) == run;
        release.Set(); // whatever happened, let the helper go
        Assert.True(returned, "the caller waited for a helper that had not started its part");
        Assert.Equal([1, 1], hits);
        Assert.Equal(threads[0], threads[1]); // part 1 ran on the caller, while the helper was still held
        WaitForTheHelper(pool, caller); // the released helper is past the first job, which it must have skipped
        Assert.Equal([1, 1], hits);
    }

    [Fact]
    public void Parts_all_run_once_and_errors_reach_the_caller()
    {
        using var pool = new KernelPool(3);
        for (int round = 0; round < 200; round++)
        {
            var hits = new int[4];
            pool.Run(4, t => Interlocked.Increment(ref hits[t]));
            Assert.All(hits, h => Assert.Equal(1, h));
        }
        var e = Assert.Throws<AggregateException>(() => pool.Run(2, t => { if (t == 1) throw new InvalidOperationException("boom"); }));
        Assert.IsType<InvalidOperationException>(e.InnerException);
        int after = 0;
        pool.Run(2, _ => Interlocked.Increment(ref after)); // still usable
        Assert.Equal(2, after);
    }

    /// <summary>
    /// Alternating part counts with a helper preempted between noticing a job and reading it. The helper notices
    /// a 2-part job it has no part in and is held there (what an oversubscribed machine does at random) while
    /// that job finishes and a 3-part job is posted. Reading the part count and body separately, it once ran part
    /// 2 of the new job twice (and counted it done twice, so Run could return before every part had finished).
    /// Each part of the new job must run exactly once.
    /// </summary>
    [Fact]
    public void A_helper_held_between_two_jobs_of_different_part_counts_runs_its_part_once()
    {
        int armed = 0;
        using var held = new ManualResetEventSlim(false);
        using var release = new ManualResetEventSlim(false);
        using var pool = new KernelPool(2, onJobNoticed: id =>
        {
            if (id == 2 && Interlocked.Exchange(ref armed, 0) == 1) { held.Set(); release.Wait(); }
        });
        // Arrange: helper 2 must be awake (spinning after a job it took part in) when the 2-part job is posted,
        // or it sleeps through it; retry until it noticed that job.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            Assert.True(DateTime.UtcNow < deadline, "helper 2 never noticed a 2-part job");
            pool.Run(3, _ => { });
            Volatile.Write(ref armed, 1);
            pool.Run(2, _ => { });
            if (Interlocked.Exchange(ref armed, 0) == 0) break;
        }
        held.Wait();

        var hits = new int[3];
        pool.Run(3, t =>
        {
            Interlocked.Increment(ref hits[t]);
            if (t != 0) return;
            release.Set();
            // Keep the job open long enough for a second run of part 2 to show.
            var until = DateTime.UtcNow + TimeSpan.FromMilliseconds(500);
            while (Volatile.Read(ref hits[2]) < 2 && DateTime.UtcNow < until) Thread.Sleep(1);
        });
        Assert.Equal([1, 1, 1], hits);
    }
}
