using Recur.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>Fills a module's parameters from named tensors, checking names and shapes.</summary>
public static class StateLoader
{
    /// <summary>
    /// Fills every parameter of <paramref name="module"/> from <paramref name="source"/> (name → tensor reader),
    /// converting dtype. A missing or mis-shaped tensor is an error naming the key; a tensor the module does not
    /// have is an error unless <paramref name="ignorable"/> accepts it, in which case it is reported through
    /// <paramref name="notice"/>.
    /// </summary>
    public static void Load(nn.Module module, WeightFiles source, Func<string, bool>? ignorable = null, Action<string>? notice = null,
        Func<string, string>? sourceName = null) =>
        Fill(module, source, ignorable, notice, sourceName, (_, p, key) =>
        {
            using var t = source.Read(key, p.dtype);
            p.copy_(t);
        });

    /// <summary>
    /// Gives every parameter of a model built inside <see cref="ParameterPlacement.Skeleton"/> its tensor from
    /// <paramref name="source"/>, in <paramref name="dtype"/> on <paramref name="device"/>, with the checks of
    /// <see cref="Load"/>. With <paramref name="map"/>, a CPU tensor stored in the wanted dtype is the file's bytes
    /// themselves (SafeTensorsFile.Map: no copy, and no memory beyond the page cache's until written to); any other
    /// is read or converted once, straight into its final dtype and device.
    /// </summary>
    public static void Bind(nn.Module model, WeightFiles source, ScalarType dtype, Device device, bool map = true,
        Func<string, bool>? ignorable = null, Action<string>? notice = null, Func<string, string>? sourceName = null)
    {
        var owners = new Dictionary<string, (nn.Module Module, string Name)>();
        var seen = new HashSet<nn.Module>(ReferenceEqualityComparer.Instance);
        foreach (var (prefix, m) in new[] { ("", model) }.Concat(model.named_modules()))
        {
            if (!seen.Add(m)) continue;
            foreach (var (name, _) in m.named_parameters(recurse: false))
                owners[prefix.Length == 0 ? name : $"{prefix}.{name}"] = (m, name);
        }
        bool cpu = device.type == DeviceType.CPU;
        var used = new HashSet<string>();
        Fill(model, source, ignorable, notice, sourceName, (full, old, key) =>
        {
            if (old.device.type != DeviceType.META)
            {
                // A parameter a constructor made outside the skeleton (small ones, e.g. qk_bias): filled in place, and
                // moved to the dtype and device below.
                using var r = source.Read(key, old.dtype);
                old.copy_(r);
                return;
            }
            Tensor? t = map ? source.Map(key) : null;
            // A second parameter from the same file tensor (a tied head kept untied) gets its own copy.
            if (t is not null && (!(cpu && t.dtype == dtype) || !used.Add(key)))
            {
                var c = t.to(dtype, device, copy: true);
                t.Dispose();
                t = c;
            }
            t ??= ReadTo(source, key, dtype, device);
            var (owner, name) = owners.TryGetValue(full, out var o) ? o
                : throw new InvalidOperationException($"parameter '{full}' has no owning module");
            var p = new Parameter(t, requires_grad: true);
            t.Dispose();
            switch (owner)
            {
                case Linear l when name == "weight": l.weight = p; break;
                case Embedding e when name == "weight": e.weight = p; break;
                case RMSNorm n when name == "weight": n.BindWeight(p); break;
                default: throw new InvalidOperationException($"cannot bind parameter '{full}' of a {owner.GetType().Name}");
            }
        });
        foreach (var (name, p) in model.named_parameters())
            if (p.device.type == DeviceType.META) throw new InvalidOperationException($"parameter '{name}' was not loaded");
        // Converts only what is not already in the dtype and on the device (the in-place filled ones).
        model.to(dtype);
        model.to(device);
    }

    static Tensor ReadTo(WeightFiles source, string key, ScalarType dtype, Device device)
    {
        var t = source.Read(key, dtype);
        if (device.type == DeviceType.CPU) return t;
        var d = t.to(device);
        t.Dispose();
        return d;
    }

    static void Fill(nn.Module module, WeightFiles source, Func<string, bool>? ignorable, Action<string>? notice,
        Func<string, string>? sourceName, Action<string, Parameter, string> fill)
    {
        var parameters = module.named_parameters().ToList();
        var wanted = new HashSet<string>();
        using (no_grad())
        {
            foreach (var (name, p) in parameters)
            {
                string key = sourceName?.Invoke(name) ?? name;
                wanted.Add(key);
                if (!source.Contains(key))
                    throw new RecurUserException($"{source.Folder}: missing tensor '{key}' (shape [{string.Join(", ", p.shape)}])");
                var e = source.Entry(key);
                if (!e.Shape.SequenceEqual(p.shape))
                    throw new RecurUserException($"{source.FileOf(key)}: tensor '{key}' has shape [{string.Join(", ", e.Shape)}], expected [{string.Join(", ", p.shape)}]");
                fill(name, p, key);
            }
        }
        var extra = source.Names.Where(n => !wanted.Contains(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        var fatal = extra.Where(n => ignorable is null || !ignorable(n)).ToList();
        if (fatal.Count > 0)
            throw new RecurUserException($"{source.FileOf(fatal[0])}: unexpected tensor '{fatal[0]}'" + (fatal.Count > 1 ? $" (and {fatal.Count - 1} more)" : "") + " that the model does not have");
        if (extra.Count > 0) notice?.Invoke($"ignored {extra.Count} tensor(s) the model does not use: {string.Join(", ", extra.Take(5))}{(extra.Count > 5 ? ", …" : "")}");
    }
}
