using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>
/// The official <c>test_time_noise</c>: before each recurrence the state is mixed with Gaussian noise,
/// s ← s·(1 − a) + ε·a with ε ~ N(0, 1), when the config's <c>test_time_noise</c> is &gt; 0. The level starts from
/// n = test_time_noise · init_values.std · init_values.embed_scale and depends on the 0-based iteration i by
/// <c>test_time_noise_type</c> (mcleish7/retrofitting-recurrence:convert_pretrained_model/raven_modeling_minimal_llama.py
/// <c>_maybe_inject_noise</c>, the same in Huginn's file):
/// fixed a = n; geom a = n/(i+1); sqrt a = n/√(i+1); line a = max(n, (mean_recurrence − i)/mean_recurrence);
/// chi a = 2·u·n with u ~ U(0, 1) drawn once per call.
/// </summary>
public static class TestTimeNoise
{
    public static Tensor Apply(RecurConfig c, Tensor state, int iteration, Generator? generator)
    {
        double n = c.TestTimeNoise * c.InitValues.Std * c.InitValues.EmbedScale;
        using var scope = NewDisposeScope();
        Tensor eps = randn(state.shape, ScalarType.Float32, generator: generator).to(state.dtype).to(state.device);
        Tensor result = c.TestTimeNoiseType switch
        {
            "fixed" => Mix(state, eps, n),
            "geom" => Mix(state, eps, n / (iteration + 1)),
            "sqrt" => Mix(state, eps, n / Math.Sqrt(iteration + 1)),
            "line" => Mix(state, eps, Math.Max(n, (c.MeanRecurrence - iteration) / (double)c.MeanRecurrence)),
            "chi" => Mix(state, eps, 2 * rand([1], ScalarType.Float64, generator: generator).item<double>() * n),
            _ => throw new RecurUserException($"test_time_noise_type '{c.TestTimeNoiseType}' is not one of fixed, geom, sqrt, line, chi"),
        };
        return result.MoveToOuterDisposeScope();
    }

    static Tensor Mix(Tensor state, Tensor eps, double a) => Scalars.Add(Scalars.Mul(state, 1 - a), Scalars.Mul(eps, a));
}
