using Recur.Distributed;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Distributed;

public class FingerprintTests
{
    [Fact]
    public void Fingerprints_see_every_byte_and_the_order()
    {
        var a = randn(4, 3);
        var b = randn(5);
        long f = Fingerprint.OfTensors([("a", a), ("b", b)]);
        Assert.Equal(f, Fingerprint.OfTensors([("a", a.clone()), ("b", b.clone())]));
        Assert.NotEqual(f, Fingerprint.OfTensors([("b", b), ("a", a)]));
        var c = a.clone();
        c[2, 1] = c[2, 1] + 1e-3f;
        Assert.NotEqual(f, Fingerprint.OfTensors([("a", c), ("b", b)]));
        Assert.NotEqual(Fingerprint.OfText("{\"steps\": 1}"), Fingerprint.OfText("{\"steps\": 2}"));
    }
}
