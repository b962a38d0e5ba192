using Recur.Model;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>One device parser for the library facade and the command line; each names what the user set.</summary>
public class DevicesTests
{
    [Theory]
    [InlineData("--device")]
    [InlineData("RecurLoadOptions.Device")]
    public void An_unknown_device_is_one_error_line_naming_the_setting(string label)
    {
        var e = Assert.Throws<RecurUserException>(() => Devices.Parse("tpu", label));
        Assert.Equal($"{label} must be cpu or cuda[:N] (got 'tpu')", e.Message);
        Assert.Equal([label], e.Parameters);
    }

    [Fact]
    public void Cpu_is_the_cpu() => Assert.Equal(TorchSharp.DeviceType.CPU, Devices.Parse("cpu", "--device").type);
}
