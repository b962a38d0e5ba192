using TorchSharp;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>Copies named tensors into a module's parameters, checking names and shapes.</summary>
public static class StateLoader
{
    /// <summary>
    /// Fills every parameter of <paramref name="module"/> from <paramref name="source"/> (name → tensor reader),
    /// converting dtype. A missing or mis-shaped tensor is an error naming the key; a tensor the module does not
    /// have is an error unless <paramref name="ignorable"/> accepts it, in which case it is reported through
    /// <paramref name="notice"/>.
    /// </summary>
    public static void Load(nn.Module module, WeightFiles source, Func<string, bool>? ignorable = null, Action<string>? notice = null,
        Func<string, string>? sourceName = null)
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
                using var t = source.Read(key, p.dtype);
                p.copy_(t);
            }
        }
        var extra = source.Names.Where(n => !wanted.Contains(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
        var fatal = extra.Where(n => ignorable is null || !ignorable(n)).ToList();
        if (fatal.Count > 0)
            throw new RecurUserException($"{source.FileOf(fatal[0])}: unexpected tensor '{fatal[0]}'" + (fatal.Count > 1 ? $" (and {fatal.Count - 1} more)" : "") + " that the model does not have");
        if (extra.Count > 0) notice?.Invoke($"ignored {extra.Count} tensor(s) the model does not use: {string.Join(", ", extra.Take(5))}{(extra.Count > 5 ? ", …" : "")}");
    }
}
