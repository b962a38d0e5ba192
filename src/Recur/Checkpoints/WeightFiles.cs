using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>
/// The tensors of a model folder: one <c>model.safetensors</c>, or the shards listed by
/// <c>model.safetensors.index.json</c>. Every header is validated when the set is opened.
/// </summary>
public sealed class WeightFiles : IDisposable
{
    readonly Dictionary<string, SafeTensorsFile> _byName = new();
    readonly List<SafeTensorsFile> _files = new();

    public IEnumerable<string> Names => _byName.Keys;
    public string Folder { get; }

    WeightFiles(string folder) { Folder = folder; }

    public static WeightFiles Open(string folder)
    {
        var ws = new WeightFiles(folder);
        try
        {
            string index = Path.Combine(folder, "model.safetensors.index.json");
            string single = Path.Combine(folder, "model.safetensors");
            if (File.Exists(index)) ws.OpenSharded(index);
            else if (File.Exists(single)) ws.Add(SafeTensorsFile.Open(single));
            else if (File.Exists(Path.Combine(folder, "pytorch_model.bin")))
                throw new RecurUserException($"{folder}: only pytorch_model.bin found; Recur reads safetensors weights (model.safetensors or a sharded index)");
            else throw new RecurUserException($"{folder}: no weights found (expected model.safetensors or model.safetensors.index.json)");
            return ws;
        }
        catch { ws.Dispose(); throw; }
    }

    void OpenSharded(string index)
    {
        JsonObject map;
        try
        {
            var root = JsonNode.Parse(File.ReadAllText(index)) as JsonObject ?? throw new JsonException("not an object");
            map = root["weight_map"] as JsonObject ?? throw new RecurUserException($"{index}: missing key 'weight_map'");
        }
        catch (JsonException e) { throw new RecurUserException($"{index}: not valid JSON ({e.Message.Split('\n')[0]})"); }
        List<KeyValuePair<string, JsonNode?>> entries;
        try { entries = [.. map]; }
        catch (ArgumentException e) { throw new RecurUserException($"{index}: weight_map names a tensor twice ({e.Message.Split('\n')[0]})"); }
        var opened = new Dictionary<string, SafeTensorsFile>();
        foreach (var (name, fileNode) in entries)
        {
            string file = fileNode is JsonValue v && v.TryGetValue<string>(out var f) ? f
                : throw new RecurUserException($"{index}: weight_map entry '{name}' must be a file name string (got {fileNode?.ToJsonString() ?? "null"})");
            if (file.Length == 0 || file.Contains('/') || file.Contains('\\') || file.StartsWith('.') || file.Any(char.IsControl))
                throw new RecurUserException($"{index}: weight_map entry '{name}' names an unsafe file path '{string.Concat(file.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()))}'");
            if (!opened.TryGetValue(file, out var st))
            {
                string p = Path.Combine(Folder, file);
                if (!File.Exists(p)) throw new RecurUserException($"{index}: shard '{file}' listed for '{name}' does not exist");
                st = SafeTensorsFile.Open(p);
                opened[file] = st;
                _files.Add(st);
            }
            if (!st.Entries.ContainsKey(name)) throw new RecurUserException($"{st.Path}: index says it holds '{name}', but it does not");
            _byName[name] = st;
        }
    }

    void Add(SafeTensorsFile f)
    {
        _files.Add(f);
        foreach (var n in f.Entries.Keys) _byName[n] = f;
    }

    public bool Contains(string name) => _byName.ContainsKey(name);
    public SafeTensorEntry Entry(string name) => _byName[name].Entries[name];
    public string FileOf(string name) => _byName.TryGetValue(name, out var f) ? f.Path : Folder;
    /// <summary>The tensor over the file's bytes (SafeTensorsFile.Map), or null when it cannot be mapped.</summary>
    public Tensor? Map(string name) =>
        _byName.TryGetValue(name, out var f) ? f.Map(name) : throw new RecurUserException($"{Folder}: missing tensor '{name}'");
    /// <summary>The address of a tensor's bytes in its file's read-only mapping, valid while this set is open (SafeTensorsFile.Address).</summary>
    internal IntPtr Address(string name) =>
        _byName.TryGetValue(name, out var f) ? f.Address(name) : throw new RecurUserException($"{Folder}: missing tensor '{name}'");
    /// <summary>The byte offset of a tensor's data in its file.</summary>
    internal long FileOffset(string name) => _byName[name].FileOffset(name);
    public Tensor Read(string name, ScalarType? dtype = null) =>
        _byName.TryGetValue(name, out var f) ? f.Read(name, dtype) : throw new RecurUserException($"{Folder}: missing tensor '{name}'");

    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
        _files.Clear();
    }
}
