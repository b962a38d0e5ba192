using System.Text.Json.Nodes;
using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>Hugging Face model folders: <c>config.json</c> plus safetensors weights, single or sharded.</summary>
public static class HfCheckpoint
{
    /// <summary>Reads <c>model_type</c> from a folder's config.json, or null when there is none.</summary>
    public static string? ModelType(string folder)
    {
        var cfg = Path.Combine(folder, "config.json");
        if (!File.Exists(cfg)) return null;
        try { return (JsonNode.Parse(File.ReadAllText(cfg)) as JsonObject)?["model_type"]?.GetValue<string>(); }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException) { return null; }
    }

    /// <summary>
    /// Loads a Llama/OLMo-2 folder with parameters in <paramref name="paramDType"/> on <paramref name="device"/>.
    /// With <paramref name="map"/>, CPU parameters in the stored dtype are the mapped file's bytes (StateLoader.Bind).
    /// </summary>
    public static DecoderModel Load(string folder, ScalarType paramDType, Device device, Action<string>? notice = null, bool map = true)
    {
        if (!Directory.Exists(folder)) throw new RecurUserException($"{folder}: model folder not found");
        string configPath = Path.Combine(folder, "config.json");
        var config = ModelConfig.Load(configPath);
        using var weights = WeightFiles.Open(folder);
        WeightCheck.Decoder(config, weights, configPath); // before anything is allocated
        Diagnostics.StartupTrace.Mark("config and headers read");
        DecoderModel model;
        using (ParameterPlacement.Skeleton()) model = new DecoderModel(config);
        try
        {
            StateLoader.Bind(model, weights, paramDType, device, map,
                // rotary inv_freq buffers appear in older exports; a tied model may still carry a copy of lm_head.
                ignorable: n => n.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) || (config.TieWordEmbeddings && n == "lm_head.weight"),
                notice: notice);
        }
        catch { model.Dispose(); throw; }
        Diagnostics.StartupTrace.Mark("weights bound");
        model.ComputeDType = paramDType;
        model.eval();
        return model;
    }

    /// <summary>
    /// Saves config.json and safetensors weights (sharded above <paramref name="maxShardBytes"/>) into a new
    /// folder. The folder is written under a temporary name and renamed when complete; an existing folder is
    /// refused unless <paramref name="force"/>.
    /// </summary>
    public static void Save(DecoderModel model, string folder, ScalarType? storeDType = null, long maxShardBytes = 4L << 30, bool force = false,
        IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        var dtype = storeDType ?? model.model.embed_tokens.weight!.dtype;
        var config = model.Config with { TorchDType = DTypeName(dtype) };
        var tensors = model.named_parameters().Select(kv => new KeyValuePair<string, Tensor>(kv.name, kv.parameter)).ToList();
        SaveFolder(folder, config.ToJson(), tensors, dtype, maxShardBytes, force, extraFiles);
    }

    /// <summary>Writes config JSON and tensors as a model folder, atomically (temporary folder, then rename).</summary>
    public static void SaveFolder(string folder, string configJson, IReadOnlyList<KeyValuePair<string, Tensor>> tensors, ScalarType dtype,
        long maxShardBytes, bool force, IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        folder = Path.GetFullPath(folder.TrimEnd('/'));
        if (Directory.Exists(folder) && !force)
            throw RecurUserException.About($"{folder}: output folder already exists (pass overwrite: true to replace it)", "overwrite: true");
        var parent = Path.GetDirectoryName(folder)!;
        Directory.CreateDirectory(parent);
        var tmp = Path.Combine(parent, $".{Path.GetFileName(folder)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            using (var scope = NewDisposeScope())
            {
                var converted = tensors.Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value.detach().to(dtype).cpu())).ToList();
                long elemSize = dtype is ScalarType.Float32 or ScalarType.Int32 ? 4 : dtype is ScalarType.Float64 or ScalarType.Int64 ? 8 : 2;
                var shards = new List<List<KeyValuePair<string, Tensor>>> { new() };
                long current = 0;
                foreach (var kv in converted)
                {
                    long n = kv.Value.numel() * elemSize;
                    if (current > 0 && current + n > maxShardBytes) { shards.Add(new()); current = 0; }
                    shards[^1].Add(kv);
                    current += n;
                }
                var meta = new Dictionary<string, string> { ["format"] = "pt" };
                if (shards.Count == 1) SafeTensorsFile.Save(Path.Combine(tmp, "model.safetensors"), shards[0], meta);
                else
                {
                    var map = new JsonObject();
                    for (int i = 0; i < shards.Count; i++)
                    {
                        string name = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                        SafeTensorsFile.Save(Path.Combine(tmp, name), shards[i], meta);
                        foreach (var kv in shards[i]) map[kv.Key] = name;
                    }
                    long total = converted.Sum(kv => kv.Value.numel() * elemSize);
                    var index = new JsonObject { ["metadata"] = new JsonObject { ["total_size"] = total }, ["weight_map"] = map };
                    AtomicFile.WriteAllText(Path.Combine(tmp, "model.safetensors.index.json"), index.ToJsonString(new() { WriteIndented = true }));
                }
            }
            AtomicFile.WriteAllText(Path.Combine(tmp, "config.json"), configJson);
            if (extraFiles is not null)
                foreach (var (name, src) in extraFiles) File.Copy(src, Path.Combine(tmp, name));
            if (Directory.Exists(folder))
            {
                // --force: move the old folder aside first so that a failure never leaves neither.
                var old = Path.Combine(parent, $".{Path.GetFileName(folder)}.old-{Guid.NewGuid():N}");
                Directory.Move(folder, old);
                Directory.Move(tmp, folder);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(tmp, folder);
        }
        catch
        {
            try { Directory.Delete(tmp, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    public static string DTypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float16 => "float16",
        _ => t.ToString().ToLowerInvariant(),
    };

    /// <summary>Parses a user dtype name (fp32/float32, bf16/bfloat16, fp16/float16).</summary>
    public static ScalarType ParseDType(string name) => name.ToLowerInvariant() switch
    {
        "fp32" or "float32" or "f32" => ScalarType.Float32,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        "fp16" or "float16" or "f16" => ScalarType.Float16,
        _ => throw new RecurUserException($"unknown dtype '{name}' (expected fp32, bf16 or fp16)"),
    };
}
