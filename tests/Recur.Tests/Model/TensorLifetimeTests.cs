using Recur.Model;
using Recur.Tests.Support;
using Recur.Training;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Model;

/// <summary>
/// Library code that makes tensors outside a dispose scope, run while another thread collects constantly: a tensor
/// held by nothing during the libtorch call that reads it is freed in the middle of that call (Model/Scalars.cs explains
/// the mechanism), which crashed the test host in at::TensorIteratorBase::build. Here it must give the same results as
/// without the collections.
/// </summary>
[Collection(ProcessSwitchesCollection.Name)]
public sealed class TensorLifetimeTests
{
    static float[] Weights(nn.Module m)
    {
        using var scope = NewDisposeScope();
        return [.. m.parameters().SelectMany(p => p.detach().to(ScalarType.Float32).reshape(-1).data<float>().ToArray())];
    }

    [Fact]
    public void Random_initialisation_gives_the_same_weights_under_constant_collection()
    {
        // A large embedding (2 M values) makes each randn, product and copy long enough for a collection to land inside it.
        var config = Presets.TinyTest with { VocabSize = 32768 };
        float[] reference;
        using (var m = TrainRun.RandomDecoder(config, 7)) reference = Weights(m);
        using var collector = new Collector();
        OutsideAnyScope(() =>
        {
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(12);
            for (int i = 0; i < 200 && DateTime.UtcNow < until; i++)
            {
                using var m = TrainRun.RandomDecoder(config, 7);
                Assert.Equal(reference, Weights(m));
            }
        });
    }

    [Fact]
    public void A_synchronous_test_holds_every_tensor_it_makes_until_it_ends()
    {
        var scope = TestTensorScopeAttribute.Current;
        Assert.NotNull(scope);
        var a = randn(3);
        var product = Scalars.Mul(a, 2.0).neg();
        Assert.Contains(a, scope.DisposablesView);
        Assert.Contains(product, scope.DisposablesView);
        Assert.True(scope.DisposablesCount >= 3, "the intermediate product is not held");
    }

    /// <summary>Runs <paramref name="body"/> on a thread of its own: the test's dispose scope (TestTensorScope) would hold what the library leaves to the GC.</summary>
    static void OutsideAnyScope(Action body)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { failure = e; }
        });
        thread.Start();
        thread.Join();
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
    }
}
