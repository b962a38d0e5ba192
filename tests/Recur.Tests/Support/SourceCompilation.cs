using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace Recur.Tests.Support;

/// <summary>
/// Compiles C# in-process with Roslyn against the assemblies this test run loaded: the project's own sources (for
/// scans that need types, not text) and documentation snippets.
/// </summary>
public static class SourceCompilation
{
    /// <summary>The repository root (the folder holding Recur.sln), found upward from the test binaries.</summary>
    public static string RepoRoot { get; } = FindRoot();

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Recur.sln"))) return d.FullName;
        throw new InvalidOperationException("Recur.sln not found above " + AppContext.BaseDirectory);
    }

    // The SDK's implicit usings for Microsoft.NET.Sdk projects (ImplicitUsings=enable in Directory.Build.props, and in
    // the project `dotnet new console` makes).
    public const string ImplicitUsings = """
        global using System;
        global using System.Collections.Generic;
        global using System.IO;
        global using System.Linq;
        global using System.Net.Http;
        global using System.Threading;
        global using System.Threading.Tasks;
        """;

    public static CSharpParseOptions ParseOptions { get; } = new(LanguageVersion.Preview);

    /// <summary>Every managed assembly of this process's trusted platform list, except the named ones.</summary>
    public static IReadOnlyList<MetadataReference> References(params string[] exclude) =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => p.EndsWith(".dll", StringComparison.Ordinal)
                && !exclude.Contains(Path.GetFileNameWithoutExtension(p), StringComparer.Ordinal))
            .Select(p => (MetadataReference)MetadataReference.CreateFromFile(p))
            .ToList();

    /// <summary>
    /// The sources of src/<paramref name="project"/> compiled as that project is (nullable, unsafe, implicit usings),
    /// against the built assemblies it references. Throws with the first errors when the compilation is not clean,
    /// so a scan never runs blind on a half-bound tree.
    /// </summary>
    public static CSharpCompilation Project(string project)
    {
        string dir = Path.Combine(RepoRoot, "src", project);
        var trees = Directory.EnumerateFiles(dir, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Select(f => CSharpSyntaxTree.ParseText(File.ReadAllText(f), ParseOptions, f))
            .Append(CSharpSyntaxTree.ParseText(ImplicitUsings, ParseOptions, "ImplicitUsings.g.cs"))
            .ToList();
        var excluded = project == "Recur" ? new[] { "Recur", "Recur.Cli", "Recur.Tests" } : new[] { project, "Recur.Tests" };
        var compilation = CSharpCompilation.Create(project, trees, References(excluded),
            new CSharpCompilationOptions(project == "Recur" ? OutputKind.DynamicallyLinkedLibrary : OutputKind.ConsoleApplication, allowUnsafe: true,
                nullableContextOptions: NullableContextOptions.Enable));
        // Source generators write the other half of two kinds of declaration during the real build: [GeneratedRegex] partial
        // methods (CS8795) and System.Text.Json contexts (a JsonSerializerContext's abstract members and constructor,
        // CS0534 and CS7036 on the class, and its Default, CS0117).
        var contexts = trees.SelectMany(t => t.GetRoot().DescendantNodes().OfType<ClassDeclarationSyntax>())
            .Where(c => c.BaseList?.Types.Any(b => b.Type.ToString().EndsWith("JsonSerializerContext", StringComparison.Ordinal)) == true)
            .Select(c => c.Identifier.Text).ToHashSet();
        bool Generated(Diagnostic d) => d.Id == "CS8795"
            || (d.Id is "CS0534" or "CS7036" && d.Location.SourceTree is { } tree && contexts.Contains(tree.GetText().ToString(d.Location.SourceSpan)))
            || (d.Id == "CS0117" && contexts.Any(n => d.GetMessage().Contains($"'{n}'", StringComparison.Ordinal)));
        var errors = compilation.GetDiagnostics().Where(d => d.Severity == DiagnosticSeverity.Error && !Generated(d)).Take(5).ToList();
        if (errors.Count > 0)
            throw new InvalidOperationException($"src/{project} does not compile in the test: " + string.Join("\n", errors));
        return compilation;
    }
}
