using Recur.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>
/// Recurrent models as HF-style folders in the Raven/Huginn layout of the paper's released checkpoints
/// (METHOD §2.7), so folders from either side load in the other.
/// </summary>
public static class RecurrentCheckpoint
{
    /// <summary>Loads a recurrent folder; with <paramref name="map"/>, CPU parameters in the stored dtype are the mapped file's bytes (StateLoader.Bind).</summary>
    public static RecurrentModel Load(string folder, ScalarType paramDType, Device device, Action<string>? notice = null, bool map = true)
    {
        if (!Directory.Exists(folder)) throw new RecurUserException($"{folder}: model folder not found");
        using var weights = WeightFiles.Open(folder);
        string configPath = Path.Combine(folder, "config.json");
        var config = RecurConfig.Load(configPath, weights.Names, notice);
        WeightCheck.Recurrent(config, weights, configPath); // before anything is allocated
        RecurrentModel model;
        using (ParameterPlacement.Skeleton()) model = new RecurrentModel(config);
        // Released files may carry Huginn leftovers (norm_3, norm_4, freqs_cis): unknown keys are ignored with a
        // notice. A block tensor the config has no room for means the config disagrees with the file: an error.
        // tie_embeddings (the official default when absent): the head is the embedding, as after HF's tie_weights;
        // the file's lm_head.weight, if any, is not used. Recur keeps an untied copy in memory and saves it untied.
        try
        {
            StateLoader.Bind(model, weights, paramDType, device, map,
                ignorable: n => !BlockTensor.IsMatch(n) || (config.TieEmbeddings && n == "lm_head.weight"),
                notice: notice,
                sourceName: config.TieEmbeddings ? n => n == "lm_head.weight" ? "transformer.wte.weight" : n : null);
        }
        catch { model.Dispose(); throw; }
        if (config.BlockType == BlockType.Sandwich)
        {
            // Huginn: q/k rows to rotate-half order, and the rotary angles from the checkpoint's freqs_cis buffer
            // [1, block_size, 1, d/2, 2] (cos, sin) when it has one (HuginnLayout.cs).
            HuginnLayout.PermuteQk(model);
            if (weights.Contains("freqs_cis"))
            {
                using var f = weights.Read("freqs_cis", ScalarType.Float32);
                int half = config.ToBlockConfig().HeadDimension / 2;
                if (f.dim() != 5 || f.shape[3] != half || f.shape[4] != 2)
                    throw new RecurUserException($"{weights.FileOf("freqs_cis")}: tensor 'freqs_cis' has shape [{string.Join(", ", f.shape)}], expected [1, block_size, 1, {half}, 2]");
                using var scope = NewDisposeScope(); // holds the views while libtorch reads them (Model/Scalars.cs)
                var table = f.select(0, 0).select(1, 0); // [P, d/2, 2]
                model.UseRotaryTable(table.select(-1, 0), table.select(-1, 1));
            }
        }
        model.ComputeDType = paramDType;
        model.eval();
        return model;
    }

    static readonly System.Text.RegularExpressions.Regex BlockTensor = new(
        @"^transformer\.(prelude|core_block|coda)\.\d+\.(attn\.(Wqkv\.weight|proj\.weight|q_norm\.weight|k_norm\.weight|qk_bias)|mlp\.(fc|proj)\.weight|norm_1\.weight|norm_2\.weight)$|^transformer\.(wte|adapter|ln_f)\.weight$|^lm_head\.weight$",
        System.Text.RegularExpressions.RegexOptions.Compiled);

    /// <summary>
    /// Writes config.json, the weights and the Python files of <see cref="RemoteCode"/> (so the folder loads in HF
    /// transformers with trust_remote_code); <paramref name="extraFiles"/> (name → source path) are copied too.
    /// </summary>
    public static void Save(RecurrentModel model, string folder, ScalarType? storeDType = null, bool force = false, long maxShardBytes = 4L << 30,
        IReadOnlyDictionary<string, string>? extraFiles = null)
    {
        var dtype = storeDType ?? model.transformer.wte.weight!.dtype;
        var config = model.Config with
        {
            TorchDType = HfCheckpoint.DTypeName(dtype),
            BlockTypeName = model.Config.BlockType switch { BlockType.Olmo2 => "olmo2", BlockType.Sandwich => "sandwich", _ => "llama" },
            // Recur holds the head as its own tensor (a tied file is untied at load) and writes it.
            TieEmbeddings = false,
            ModelType = "huginn_raven",
            Architectures = ["RavenForCausalLM"],
            AutoMap = RemoteCode.AutoMap(),
        };
        var tensors = model.named_parameters().Select(kv => new KeyValuePair<string, Tensor>(kv.name, kv.parameter)).ToList();
        using var scope = NewDisposeScope();
        if (model.Config.BlockType == BlockType.Sandwich)
        {
            // Back to Huginn's interleaved q/k layout, and its rotary buffer, so the file is Huginn's own format.
            var bc = model.Config.ToBlockConfig();
            tensors = tensors.Select(kv => kv.Key.EndsWith("attn.Wqkv.weight", StringComparison.Ordinal) || kv.Key.EndsWith("attn.qk_bias", StringComparison.Ordinal)
                ? new KeyValuePair<string, Tensor>(kv.Key, HuginnLayout.ToInterleaved(bc, kv.Key, kv.Value.detach())) : kv).ToList();
            if (model.RotaryTable is { } t)
                tensors.Add(new("freqs_cis", stack([t.Cos, t.Sin], -1).unsqueeze(1).unsqueeze(0)));
        }
        var code = Path.Combine(Path.GetTempPath(), $"recur-remote-code-{Guid.NewGuid():N}");
        try
        {
            var files = RemoteCode.WriteTo(code);
            // A source folder's copies of these files (e.g. the paper's) are replaced by Recur's.
            foreach (var (name, path) in extraFiles ?? new Dictionary<string, string>())
                if (!files.ContainsKey(name)) files[name] = path;
            HfCheckpoint.SaveFolder(folder, config.ToJson(), tensors, dtype, maxShardBytes, force, files);
        }
        finally { try { Directory.Delete(code, recursive: true); } catch (IOException) { } }
    }
}
