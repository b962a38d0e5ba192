using Recur.Checkpoints;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Tests.Support;

/// <summary>Tiny random models and scratch folders for tests.</summary>
static class TestModels
{
    /// <summary>A model with seeded random weights (norm weights near 1 so they are not trivial).</summary>
    public static DecoderModel Random(ModelConfig config, long seed = 0)
    {
        // A private generator: tests run in parallel, and the global one would interleave their draws.
        using var gen = new Generator((ulong)seed);
        var m = new DecoderModel(config);
        using (no_grad())
            foreach (var (name, p) in m.named_parameters())
            {
                // Through Scalars: `1 + t * 0.1` makes Scalars a collection can free mid-call (Model/Scalars.cs), which
                // once failed a parallel test run in toFloat. The tensor temporaries (randn, the product) are held by a
                // dispose scope for the same reason (src/Recur/Model/Scalars.cs).
                using var scope = NewDisposeScope();
                if (name.Contains("norm")) p.copy_(Scalars.Add(Scalars.Mul(randn(p.shape, generator: gen), 0.1), 1));
                else p.copy_(Scalars.Mul(randn(p.shape, generator: gen), 0.05));
            }
        m.eval();
        return m;
    }

    public static string TempDir(string prefix = "recur-test")
    {
        var d = Path.Combine(Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    public static string FixturesDir => Path.Combine(AppContext.BaseDirectory, "fixtures");

    /// <summary>Saves a random model as an HF folder and returns the folder.</summary>
    public static string SaveRandom(ModelConfig config, long seed = 0)
    {
        var dir = Path.Combine(TempDir(), "model");
        using var m = Random(config, seed);
        HfCheckpoint.Save(m, dir);
        return dir;
    }
}

static class TensorAssert
{
    /// <summary>Same shape, same dtype, same values.</summary>
    public static bool Same(Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape) || a.dtype != b.dtype) return false;
        using var equal = a.eq(b);
        using var all = equal.all();
        return all.item<bool>();
    }
}
