using System.Reflection;
using System.Text;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Recur.Checkpoints;
using Recur.Model;
using Recur.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Library;

/// <summary>
/// docs/library.md's C# code blocks, as a reader copies them: the blocks of one "## " section form one program
/// (later blocks use the model the first one loads), compiled against the library; the cheap ones also run, from a
/// folder where the paths they name hold tiny random models. The training block (200 steps) is compiled only.
/// </summary>
[Collection("Console")] // the programs write to Console.Out and use relative paths: the test swaps both
public sealed class LibraryDocsTests
{
    sealed record Block(string Section, string Code);

    static List<Block> CSharpBlocks()
    {
        var blocks = new List<Block>();
        string section = "";
        StringBuilder? code = null;
        foreach (var line in File.ReadAllLines(Path.Combine(SourceCompilation.RepoRoot, "docs", "library.md")))
        {
            if (code is null && line.StartsWith("## ", StringComparison.Ordinal)) section = line[3..];
            else if (code is null && line.Trim() == "```csharp") code = new StringBuilder();
            else if (code is not null && line.Trim() == "```") { blocks.Add(new Block(section, code.ToString())); code = null; }
            else code?.AppendLine(line);
        }
        return blocks;
    }

    /// <summary>One program from blocks: their using directives first (once each), then their statements in order.</summary>
    static string Program(IEnumerable<Block> blocks)
    {
        var usings = new List<string>();
        var body = new StringBuilder();
        foreach (var b in blocks)
            foreach (var line in b.Code.Split('\n'))
            {
                var t = line.TrimEnd('\r');
                if (System.Text.RegularExpressions.Regex.IsMatch(t, @"^using [\w.]+;$")) { if (!usings.Contains(t)) usings.Add(t); }
                else body.AppendLine(t);
            }
        return string.Join("\n", usings) + "\n" + body;
    }

    static Assembly Compile(string source, string name)
    {
        var compilation = CSharpCompilation.Create(name,
            // A reader's `dotnet new console` project has the SDK's implicit usings (System, System.Threading, …).
            [CSharpSyntaxTree.ParseText(source, SourceCompilation.ParseOptions.WithLanguageVersion(LanguageVersion.Latest)),
             CSharpSyntaxTree.ParseText(SourceCompilation.ImplicitUsings, SourceCompilation.ParseOptions.WithLanguageVersion(LanguageVersion.Latest))],
            SourceCompilation.References("Recur.Tests"),
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        using var ms = new MemoryStream();
        var emit = compilation.Emit(ms);
        var errors = emit.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        Assert.True(emit.Success, $"docs/library.md ({name}) does not compile:\n{string.Join("\n", errors)}\n--- program ---\n{source}");
        return Assembly.Load(ms.ToArray());
    }

    static string RunIn(string dir, Assembly program)
    {
        var output = new StringWriter();
        var (cwd, stdout) = (Environment.CurrentDirectory, Console.Out);
        try
        {
            Environment.CurrentDirectory = dir;
            Console.SetOut(output);
            var result = program.EntryPoint!.Invoke(null, program.EntryPoint.GetParameters().Length == 0 ? null : [Array.Empty<string>()]);
            if (result is Task task) task.GetAwaiter().GetResult();
        }
        catch (TargetInvocationException e) when (e.InnerException is not null)
        {
            throw new InvalidOperationException($"docs/library.md program failed: {e.InnerException.Message}\n--- output ---\n{output}", e.InnerException);
        }
        finally
        {
            Console.SetOut(stdout);
            Environment.CurrentDirectory = cwd;
        }
        return output.ToString();
    }

    [Fact]
    public void Every_csharp_block_of_the_library_page_compiles()
    {
        var sections = CSharpBlocks().GroupBy(b => b.Section).ToList();
        Assert.True(sections.Sum(s => s.Count()) >= 4, "docs/library.md lost its C# examples");
        foreach (var s in sections) Compile(Program(s), "LibraryDoc");
    }

    /// <summary>
    /// The facade example (load, retrofit 4,8,4, generate at three T, stream, save, load) with the evaluation
    /// example after it, and the IChatClient example, each run as written against tiny random models.
    /// </summary>
    [Fact]
    public void The_facade_evaluation_and_chat_client_examples_run_as_written()
    {
        string dir = TestModels.TempDir("recur-doc");
        // models/TinyLlama-1.1B: a tiny random Llama with 16 layers (the example cuts it 4,8,4) and a word tokenizer.
        string baseDir = Path.Combine(dir, "models", "TinyLlama-1.1B");
        using (var gen = new Generator(7))
        using (var m = new DecoderModel(Presets.TinyTest with { NumHiddenLayers = 16 }))
        {
            using (no_grad())
            using (NewDisposeScope())
                foreach (var (name, p) in m.named_parameters())
                    p.copy_(name.Contains("norm") ? Scalars.Add(Scalars.Mul(randn(p.shape, generator: gen), 0.1), 1) : Scalars.Mul(randn(p.shape, generator: gen), 0.05));
            HfCheckpoint.Save(m, baseDir);
        }
        ChatModels.WriteTokenizer(baseDir);
        Directory.CreateDirectory(Path.Combine(dir, "data", "gsm8k"));
        const string row = """{"question": "the cat sat on the mat", "answer": "the dog ran to the mat\n#### 4"}""";
        File.WriteAllText(Path.Combine(dir, "data", "gsm8k", "test.jsonl"), row + "\n" + row + "\n");
        File.WriteAllText(Path.Combine(dir, "data", "gsm8k", "train.jsonl"), """{"question": "a dog is big", "answer": "the cat is small\n#### 2"}""" + "\n");
        CopyFolder(ChatModels.Recurrent(ChatModels.ChatMLTemplate, seed: 8), Path.Combine(dir, "runs", "tinyllama-chat-484"));

        var blocks = CSharpBlocks();
        var facade = blocks.Where(b => b.Section.StartsWith("The facade", StringComparison.Ordinal) && !b.Code.Contains(".Train(", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, facade.Count); // the example and the evaluation
        string facadeOut = RunIn(dir, Compile(Program(facade), "LibraryDocFacade"));
        Assert.Contains("T=1: ", facadeOut);
        Assert.Contains("T=16: ", facadeOut);
        Assert.True(Directory.Exists(Path.Combine(dir, "runs", "tinyllama-484")));
        // Three generations, then three evaluation results (T=1, 4, 16); the streamed text ends without a newline.
        Assert.Equal(6, System.Text.RegularExpressions.Regex.Matches(facadeOut, "T=(1|4|16): ").Count);

        var chat = blocks.Where(b => b.Section.Contains("IChatClient", StringComparison.Ordinal)).ToList();
        string chatOut = RunIn(dir, Compile(Program(chat), "LibraryDocChat"));
        Assert.Contains("reply tokens", chatOut);
    }

    static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}
