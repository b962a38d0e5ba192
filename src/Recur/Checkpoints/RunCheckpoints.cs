using System.Text.Json;
using Recur.Training;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>
/// The checkpoints of a training run: <c>checkpoints/phaseP-stepS/</c> under the run folder, each a loadable model
/// folder plus the optimizer state and <c>trainer_state.json</c> (step, schedules, data position; STYLE §7), written
/// atomically and pruned to the newest few (mcleish7/retrofitting-recurrence:train.py <c>save_checkpoint</c> keeps the
/// same pieces). The trainer decides when; this class owns the files.
/// </summary>
public static class RunCheckpoints
{
    public const string StateFile = "trainer_state.json";
    public const string OptimizerFile = "optimizer.safetensors";

    /// <summary>snake_case, indented: trainer_state.json, and metrics.jsonl lines once compacted.</summary>
    public static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>The folder name of the checkpoint after <paramref name="step"/> steps of phase <paramref name="phase"/> (0-based).</summary>
    public static string Name(int phase, long step) => $"phase{phase + 1}-step{step:D7}";

    /// <summary>Checkpoint folders of a run, oldest first (names sort by phase, then step); folders without a state file are incomplete.</summary>
    public static List<string> List(string outDir)
    {
        var root = Path.Combine(outDir, "checkpoints");
        if (!Directory.Exists(root)) return [];
        return Directory.GetDirectories(root, "phase*-step*")
            .Where(d => File.Exists(Path.Combine(d, StateFile)))
            .OrderBy(d => d, StringComparer.Ordinal).ToList();
    }

    public static string? Latest(string outDir) => List(outDir).LastOrDefault();

    public static TrainerState ReadState(string checkpointDir)
    {
        var p = Path.Combine(checkpointDir, StateFile);
        try { return JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(p), Json) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new RecurUserException($"{p}: unreadable trainer state ({e.Message.Split('\n')[0]})"); }
    }

    /// <summary>
    /// Writes the checkpoint of <paramref name="state"/> atomically: the optimizer state and trainer_state.json go to a
    /// scratch folder, and <paramref name="saveModel"/> (folder, extra files to place beside the weights) writes the model
    /// folder with them, replacing any folder of that name only when complete; the previous checkpoint is untouched
    /// until then. Returns the checkpoint folder.
    /// </summary>
    public static string Save(string outDir, TrainerState state, IEnumerable<IOptimizer> optimizers, IReadOnlyDictionary<string, string> extraFiles,
        Action<string, Dictionary<string, string>> saveModel)
    {
        var dir = Path.Combine(outDir, "checkpoints", Name(state.Phase, state.Step));
        var files = new Dictionary<string, string>(extraFiles);
        var scratch = Path.Combine(outDir, $".scratch-{Guid.NewGuid():N}");
        Directory.CreateDirectory(scratch);
        try
        {
            var optState = optimizers.SelectMany(o => o.StateDict().Select(kv => new KeyValuePair<string, Tensor>($"{o.Name}.{kv.Key}", kv.Value))).ToList();
            SafeTensorsFile.Save(Path.Combine(scratch, OptimizerFile), optState);
            File.WriteAllText(Path.Combine(scratch, StateFile), JsonSerializer.Serialize(state, Json));
            files[OptimizerFile] = Path.Combine(scratch, OptimizerFile);
            files[StateFile] = Path.Combine(scratch, StateFile);
            saveModel(dir, files);
        }
        finally { Directory.Delete(scratch, recursive: true); }
        return dir;
    }

    /// <summary>Deletes all but the newest <paramref name="keep"/> checkpoints.</summary>
    public static void Prune(string outDir, int keep)
    {
        var all = List(outDir);
        foreach (var old in all.Take(Math.Max(0, all.Count - keep))) Directory.Delete(old, recursive: true);
    }

    /// <summary>Loads each optimizer's state (its entries under "name.") from the run's latest checkpoint.</summary>
    public static void LoadOptimizers(string outDir, IEnumerable<IOptimizer> optimizers)
    {
        var dir = Latest(outDir) ?? throw new RecurUserException($"{outDir}: no checkpoint to resume the optimizer state from");
        using var f = SafeTensorsFile.Open(Path.Combine(dir, OptimizerFile));
        foreach (var o in optimizers)
        {
            string prefix = o.Name + ".";
            var state = f.Entries.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal))
                .ToDictionary(k => k[prefix.Length..], k => f.Read(k));
            o.LoadStateDict(state, Path.Combine(dir, OptimizerFile));
        }
    }
}
