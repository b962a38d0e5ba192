using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>The one device parser of the library facade and the command line.</summary>
public static class Devices
{
    /// <summary>
    /// cpu or cuda[:N]. <paramref name="label"/> names what the user set in error lines: "--device" on the command line,
    /// "device" for <c>RecurLoadOptions.Device</c>.
    /// </summary>
    public static Device Parse(string name, string label)
    {
        if (name == "cpu") return CPU;
        if (name.StartsWith("cuda", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw new RecurUserException($"{label} {name}: CUDA is not available (this build uses the CPU TorchSharp package, or no GPU is visible; build with -p:TorchBackend=cuda)");
            return device(name);
        }
        throw new RecurUserException($"{label} must be cpu or cuda[:N] (got '{name}')");
    }
}
