using Xunit;

namespace Recur.Tests.Support;

/// <summary>
/// Locates the project's shared assets (tokenizers, small checkpoints...) that live outside the
/// repository, in the <c>shared</c> folder beside the checkout (<c>../shared</c> from the
/// folder holding Recur.sln). Set RECUR_SHARED_DIR to use another folder. Tests that need
/// them use <see cref="SharedFactAttribute"/> / <see cref="SharedTheoryAttribute"/>, which skip
/// with a clear reason when the folder (or the named file in it) is absent.
/// </summary>
public static class SharedAssets
{
    /// <summary>Environment variable that overrides where the shared folder is.</summary>
    public const string EnvironmentVariable = "RECUR_SHARED_DIR";

    private static readonly Lazy<string?> RepoRootLazy = new(FindRepoRoot);
    private static readonly Lazy<string?> RootLazy = new(FindShared);

    /// <summary>The folder holding Recur.sln, found by walking up from the test binaries; null if not found.</summary>
    public static string? RepoRoot => RepoRootLazy.Value;

    /// <summary>Full path of the shared folder, or null when it is absent.</summary>
    public static string? Root => RootLazy.Value;

    /// <summary>Whether the shared folder exists.</summary>
    public static bool Available => Root is not null;

    /// <summary>
    /// Full path of <paramref name="parts"/> inside the shared folder, e.g.
    /// <c>SharedAssets.Path("tokenizers", "llama3", "tokenizer.json")</c>. Throws when the
    /// folder is absent (use the attributes to skip instead).
    /// </summary>
    public static string Path(params string[] parts)
    {
        string root = Root ?? throw new InvalidOperationException(SkipReason(parts) ?? "shared folder not present");
        return System.IO.Path.Combine([root, .. parts]);
    }

    /// <summary>Whether <paramref name="parts"/> (a file or folder under the shared folder) exists.</summary>
    public static bool Exists(params string[] parts)
    {
        if (Root is null)
            return false;
        string p = Path(parts);
        return File.Exists(p) || Directory.Exists(p);
    }

    /// <summary>Why a test needing <paramref name="parts"/> must be skipped, or null when it can run.</summary>
    public static string? SkipReason(params string[] parts)
    {
        if (Root is null)
        {
            string? fromEnv = Environment.GetEnvironmentVariable(EnvironmentVariable);
            string where = !string.IsNullOrWhiteSpace(fromEnv)
                ? $"{EnvironmentVariable}={fromEnv} does not exist"
                : RepoRoot is null
                    ? "Recur.sln not found above " + AppContext.BaseDirectory
                    : System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared")) + $" does not exist (set {EnvironmentVariable} to point elsewhere)";
            return $"../shared not present: {where}";
        }
        if (parts.Length > 0 && !Exists(parts))
            return $"../shared present but {System.IO.Path.Combine(parts)} is missing under {Root}";
        return null;
    }

    private static string? FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "Recur.sln")))
                return dir.FullName;
        }
        return null;
    }

    private static string? FindShared()
    {
        string? fromEnv = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(fromEnv))
            return Directory.Exists(fromEnv) ? System.IO.Path.GetFullPath(fromEnv) : null;
        if (RepoRoot is null)
            return null;
        string shared = System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared"));
        return Directory.Exists(shared) ? shared : null;
    }
}

/// <summary>A <see cref="FactAttribute"/> that skips when the shared folder, or the given path inside it, is absent.</summary>
public sealed class SharedFactAttribute : FactAttribute
{
    /// <param name="requiredParts">Optional path inside the shared folder that the test needs, e.g. "tokenizers", "llama3".</param>
    public SharedFactAttribute(params string[] requiredParts)
    {
        if (SharedAssets.SkipReason(requiredParts) is { } reason)
            Skip = reason;
    }
}

/// <summary>A <see cref="TheoryAttribute"/> that skips when the shared folder, or the given path inside it, is absent.</summary>
public sealed class SharedTheoryAttribute : TheoryAttribute
{
    /// <param name="requiredParts">Optional path inside the shared folder that the test needs.</param>
    public SharedTheoryAttribute(params string[] requiredParts)
    {
        if (SharedAssets.SkipReason(requiredParts) is { } reason)
            Skip = reason;
    }
}
