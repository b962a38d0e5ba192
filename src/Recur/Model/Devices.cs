using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>The one device parser of the library facade and the command line.</summary>
public static class Devices
{
    /// <summary>
    /// cpu or cuda[:N]. <paramref name="label"/> names what the user set in error lines (and is the error's
    /// <see cref="RecurUserException.Parameters"/> entry): <c>RecurLoadOptions.Device</c> in the library, "--device" on the command line.
    /// </summary>
    public static Device Parse(string name, string label)
    {
        if (name == "cpu") return CPU;
        if (name.StartsWith("cuda", StringComparison.Ordinal))
        {
            if (!cuda.is_available())
                throw RecurUserException.About($"{label} {name}: CUDA is not available (this build uses the CPU TorchSharp package, or no GPU is visible; build with -p:TorchBackend=cuda)", label);
            return device(name);
        }
        throw RecurUserException.About($"{label} must be cpu or cuda[:N] (got '{name}')", label);
    }
}
