// Which `recur generate` runs without libtorch (Engine/MappedDecoder.cs), decided before anything touches it.
//
// The path is exact only where it computes what the libtorch path computes: greedy decoding (sampling draws from
// libtorch's generator, so a seed must keep meaning the same draws), one prompt, a plain Llama or OLMo-2 folder on
// the CPU whose weights are stored in the compute dtype, none of adaptive depth, speculation or recurrence (a
// recurrent model's s_0 comes from libtorch's generator). Everything else goes to the libtorch path as before.
// RECUR_TORCH_FREE=0 always takes the libtorch path; RECUR_TRACE_STARTUP=1 says which path ran and, after
// generating, whether libtorch_cpu.so is mapped into the process.
using Recur.Checkpoints;
using Recur.Diagnostics;
using Recur.Engine;
using static TorchSharp.torch;

namespace Recur.Cli;

static class TorchFreeRoute
{
    public static bool Enabled => Environment.GetEnvironmentVariable("RECUR_TORCH_FREE") != "0";

    /// <summary>
    /// What a generate that cannot take the libtorch-free path does before it loads libtorch; null (the CLI) goes on
    /// through libtorch in this process. The native generate front (src/Recur.Generate), which cannot run libtorch,
    /// sets it to hand the whole command line to the full CLI instead (it does not return).
    /// </summary>
    public static Action? LibtorchPathHandOff { get; set; }

    /// <summary>
    /// Whether a command line might take the libtorch-free path, from the raw arguments (before the command line is
    /// parsed): when it cannot, Program.cs starts loading libtorch at once. A wrong "might" only costs that head start;
    /// <see cref="Open"/> decides.
    /// </summary>
    public static bool MayApply(string[] args)
    {
        if (!Enabled || args.Length == 0 || args[0] != "generate") return false;
        if (Environment.GetEnvironmentVariable("RECUR_FAST_DECODE") == "0" || Environment.GetEnvironmentVariable("RECUR_GEMV") == "0") return false;
        int prompts = 0;
        string? model = null;
        for (int i = 1; i < args.Length; i++)
        {
            string name = args[i], value = i + 1 < args.Length ? args[i + 1] : "";
            int eq = name.IndexOfAny(['=', ':']);
            if (name.StartsWith("--", StringComparison.Ordinal) && eq > 0) (name, value) = (name[..eq], name[(eq + 1)..]);
            switch (name)
            {
                case "--speculate" or "--recurrences": return false;
                case "--temperature" when !(double.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out double t) && t == 0): return false;
                case "--device" when value != "cpu": return false;
                case "--dtype" when value.ToLowerInvariant() is not ("fp32" or "float32" or "f32" or "bf16" or "bfloat16"): return false;
                case "--prompt" or "--prompt-ids": prompts++; break;
                case "--model": model = value; break;
            }
        }
        if (prompts > 1 || model is null) return false;
        try
        {
            string path = Recur.Hub.HubCache.Resolve(model);
            return Directory.Exists(path) && ModelLoader.Detect(path) == ModelFormat.HuggingFace;
        }
        catch (Exception e) when (e is RecurUserException or IOException or UnauthorizedAccessException or ArgumentException) { return false; }
    }

    /// <summary>
    /// The model opened for the libtorch-free path, or null when the libtorch path must run; <paramref name="route"/>
    /// says which and why (for RECUR_TRACE_STARTUP). A broken folder is an error here, with the libtorch loader's message.
    /// </summary>
    public static MappedDecoder? Open(string path, ModelFormat format, ScalarType dtype, string device, SamplingOptions sampling, SpeculativeOptions? spec,
        string? recurrences, int prompts, out string route, Action<string>? notice = null)
    {
        string? why = !Enabled ? "RECUR_TORCH_FREE=0"
            : Environment.GetEnvironmentVariable("RECUR_FAST_DECODE") == "0" ? "RECUR_FAST_DECODE=0"
            : Environment.GetEnvironmentVariable("RECUR_GEMV") == "0" ? "RECUR_GEMV=0"
            : format == ModelFormat.Recurrent ? "a recurrent model"
            : format == ModelFormat.Llama2c ? "a llama2.c file"
            : device != "cpu" ? $"--device {device}"
            : dtype is not (ScalarType.Float32 or ScalarType.BFloat16) ? $"--dtype {HfCheckpoint.DTypeName(dtype)}"
            : !sampling.Greedy ? "sampling (--temperature above 0)"
            : spec is not null ? "--speculate"
            : recurrences is not null ? "--recurrences"
            : prompts != 1 ? "several prompts"
            : null;
        MappedDecoder? mapped = null;
        if (why is null)
        {
            mapped = MappedDecoder.TryOpen(path, dtype == ScalarType.BFloat16, out string reason, notice);
            if (mapped is null) why = reason;
        }
        route = mapped is not null ? $"libtorch-free path ({HfCheckpoint.DTypeName(dtype)} weights mapped)" : $"libtorch path: {why}";
        return mapped;
    }

    /// <summary>
    /// Collects the garbage of start-up — most of it the tokenizer's load (a SentencePiece model allocates ~13 MB of
    /// protobuf messages and dictionaries, of which ~5 MB stays) — and hands its memory back to the system, once, after
    /// the prompt is encoded and before the first forward pages the weights in: the process's peak resident memory is
    /// reached with all the weights mapped, and whatever the GC heap still holds then adds to it. Measured at the
    /// stories110M shape: 5 MB less peak RSS for a ~10 ms pause (docs/performance.md, "Generating without libtorch").
    /// </summary>
    public static void ReleaseStartupGarbage()
    {
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        StartupTrace.Mark("start-up garbage collected");
    }

    /// <summary>Whether libtorch's CPU library is mapped into this process (/proc/self/maps), for the start-up trace.</summary>
    public static string LibtorchMapped()
    {
        if (!StartupTrace.Enabled) return "";
        try { return File.ReadLines("/proc/self/maps").Any(l => l.EndsWith("/libtorch_cpu.so", StringComparison.Ordinal)) ? "libtorch_cpu.so mapped" : "libtorch_cpu.so not mapped"; }
        catch (IOException) { return "no /proc/self/maps"; }
    }
}
