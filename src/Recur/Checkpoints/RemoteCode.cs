using System.Reflection;

namespace Recur.Checkpoints;

/// <summary>
/// The Python configuration and modeling files that make a recurrent folder load in Hugging Face transformers with
/// <c>AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)</c> (docs/checkpoints.md). They are Recur's
/// own implementation of the Raven forward for the block types Recur writes, shipped inside the assembly.
/// </summary>
public static class RemoteCode
{
    public const string ConfigFile = "raven_config_minimal.py", ModelingFile = "raven_modeling_minimal.py";

    /// <summary>config.json's auto_map: the released models' file and class names.</summary>
    public static Dictionary<string, string> AutoMap() => new()
    {
        ["AutoConfig"] = "raven_config_minimal.RavenConfig",
        ["AutoModel"] = "raven_modeling_minimal.RavenForCausalLM",
        ["AutoModelForCausalLM"] = "raven_modeling_minimal.RavenForCausalLM",
    };

    /// <summary>The text of one of the shipped files.</summary>
    public static string Text(string name)
    {
        using var s = typeof(RemoteCode).Assembly.GetManifestResourceStream($"Recur.RemoteCode.{name}")
            ?? throw new InvalidOperationException($"resource {name} is missing from the Recur assembly");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>Writes both files into <paramref name="folder"/> and returns name → path.</summary>
    public static Dictionary<string, string> WriteTo(string folder)
    {
        Directory.CreateDirectory(folder);
        var files = new Dictionary<string, string>();
        foreach (var name in new[] { ConfigFile, ModelingFile })
        {
            var path = Path.Combine(folder, name);
            File.WriteAllText(path, Text(name));
            files[name] = path;
        }
        return files;
    }
}
