using Xunit;

namespace Recur.Tests.Support;

/// <summary>
/// Locates <c>../shared</c> (read-only assets beside the checkout). Absent on a user's fresh clone,
/// so tests that need it use <see cref="SharedFactAttribute"/> and are skipped with a message.
/// </summary>
public static class SharedAssets
{
    public static string? RepoRoot { get; } = FindRepoRoot();
    public static string? Root { get; } = RepoRoot is null ? null : System.IO.Path.GetFullPath(System.IO.Path.Combine(RepoRoot, "..", "shared"));
    public static bool Available => Root is not null && Directory.Exists(Root);

    public static string Path(params string[] parts) =>
        System.IO.Path.Combine([Root ?? throw new InvalidOperationException("../shared is not present"), .. parts]);

    static string? FindRepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(System.IO.Path.Combine(d.FullName, "Recur.sln"))) return d.FullName;
        return null;
    }
}

/// <summary>A fact that is skipped, with a message, when ../shared is absent.</summary>
public sealed class SharedFactAttribute : FactAttribute
{
    public SharedFactAttribute()
    {
        if (!SharedAssets.Available) Skip = "../shared not present: this test needs the shared fixtures beside the checkout";
    }
}

/// <summary>A theory that is skipped, with a message, when ../shared is absent.</summary>
public sealed class SharedTheoryAttribute : TheoryAttribute
{
    public SharedTheoryAttribute()
    {
        if (!SharedAssets.Available) Skip = "../shared not present: this test needs the shared fixtures beside the checkout";
    }
}
