using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>Chooses the compute dtype once per run (METHOD §4.2, STYLE §6).</summary>
public static class Precision
{
    /// <summary>
    /// "auto" picks bf16 where matmuls in bf16 are fast — CUDA, or a CPU with AVX-512 BF16 or AMX (oneDNN's
    /// bf16 kernels) — and fp32 elsewhere. Parameters and optimizer state stay fp32 either way.
    /// </summary>
    public static (ScalarType DType, string Reason) Resolve(string setting, Device device)
    {
        if (setting == "fp32") return (ScalarType.Float32, "fp32 requested");
        if (setting == "bf16") return (ScalarType.BFloat16, "bf16 requested");
        if (device.type == TorchSharp.DeviceType.CUDA) return (ScalarType.BFloat16, "auto: CUDA device");
        return CpuHasFastBf16() ? (ScalarType.BFloat16, "auto: CPU has AVX-512 BF16/AMX") : (ScalarType.Float32, "auto: CPU lacks AVX-512 BF16/AMX");
    }

    public static bool CpuHasFastBf16()
    {
        try
        {
            if (!File.Exists("/proc/cpuinfo")) return false;
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
                if (line.StartsWith("flags", StringComparison.Ordinal))
                    return line.Contains(" avx512_bf16", StringComparison.Ordinal) || line.Contains(" amx_bf16", StringComparison.Ordinal);
        }
        catch (IOException) { }
        return false;
    }
}
