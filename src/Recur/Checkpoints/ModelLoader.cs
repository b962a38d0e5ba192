using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>Which kind of model a path holds.</summary>
public enum ModelFormat { HuggingFace, Recurrent, Llama2c }

/// <summary>Opens any model path Recur understands, detecting its format.</summary>
public static class ModelLoader
{
    public static ModelFormat Detect(string path)
    {
        path = Hub.HubCache.Resolve(path);
        if (File.Exists(path))
        {
            if (Llama2c.LooksLike(path)) return ModelFormat.Llama2c;
            throw new RecurUserException($"{path}: not a model folder or llama2.c .bin file");
        }
        if (!Directory.Exists(path)) throw new RecurUserException($"{path}: model path not found");
        if (!File.Exists(Path.Combine(path, "config.json"))) throw new RecurUserException($"{path}: missing config.json");
        return RecurConfig.IsRecurrentFolder(path) ? ModelFormat.Recurrent : ModelFormat.HuggingFace;
    }

    /// <summary>
    /// Loads a model folder, llama2.c file, or a model in the local Hugging Face cache (a repository id such as
    /// <c>org/name</c>, or the cache's <c>models--org--name</c> folder; see <see cref="Hub.HubCache"/>).
    /// </summary>
    public static ICausalLM Load(string path, ScalarType paramDType, Device device, Action<string>? notice = null)
    {
        path = Hub.HubCache.Resolve(path);
        return Detect(path) switch
        {
            ModelFormat.Llama2c => Llama2c.Load(path, paramDType, device),
            ModelFormat.Recurrent => RecurrentCheckpoint.Load(path, paramDType, device, notice),
            _ => HfCheckpoint.Load(path, paramDType, device, notice),
        };
    }

    /// <summary>Loads a plain (non-recurrent) decoder, with a clear error for a recurrent folder.</summary>
    public static DecoderModel LoadDecoder(string path, ScalarType paramDType, Device device, Action<string>? notice = null) =>
        Detect(path) == ModelFormat.Recurrent
            ? throw new RecurUserException($"{path}: is already a recurrent model; expected a plain Llama/OLMo-2 model")
            : (DecoderModel)Load(path, paramDType, device, notice);
}
