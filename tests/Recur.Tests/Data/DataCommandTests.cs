using System.CommandLine;
using Recur.Cli;
using Recur.Data;
using Xunit;
using static Recur.Tests.Data.DataTestKit;

namespace Recur.Tests.Data;


/// <summary><c>recur data prepare</c> and <c>recur data inspect</c>, invoked in-process.</summary>
[Collection("Console")]
public sealed class DataCommandTests : IDisposable
{
    private readonly DataTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    private static (int Exit, string Out, string Err) Run(Command command, params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        var (o, e) = (new StringWriter(), new StringWriter());
        Console.SetOut(o);
        Console.SetError(e);
        try
        {
            int exit = command.Parse(args).Invoke();
            return (exit, o.ToString(), e.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    [Fact]
    public void Prepare_tokenises_reports_and_writes_a_spec_that_inspect_reads()
    {
        string a = _kit.WriteRandomJsonl("a.jsonl", docs: 50, maxWords: 6, seed: 1);
        string b = _kit.Write("b.txt", string.Concat(Enumerable.Repeat("w1 w2 w3\n\n", 8)));
        string tok = _kit.WriteTokenizer();
        string outDir = Path.Combine(_kit.Dir, "prepared");

        var (exit, stdout, stderr) = Run(DataPrepareCommand.CreatePrepare(),
            "--source", a, "--source", b, "--weight", "3", "--weight", "1", "--text-unit", "paragraph",
            "--tokenizer", tok, "--seq-len", "8", "--val-fraction", "0.1", "--seed", "5", "--out", outDir);
        Assert.True(exit == 0, stderr);
        var spec = DataSpec.Load(Path.Combine(outDir, DataPrepareCommand.SpecFileName));
        Assert.Equal(8, spec.SeqLen);
        Assert.Equal(5, spec.Seed);
        Assert.Equal(0.1, spec.ValFraction);
        Assert.Equal([a, b], spec.Sources.Select(s => s.Path));
        Assert.Equal([3.0, 1.0], spec.Sources.Select(s => s.Weight));

        using (var t = Recur.Tokenization.TokenizerLoader.Load(tok))
        using (var data = PackedDataset.Open(spec, t, outDir, buildMissing: false))
        {
            Assert.Equal(50, data.Sources[0].Info.Documents);
            Assert.Equal(8, data.Sources[1].Info.Documents);
            Assert.Contains($"total: {50 + 8} documents, {data.Sources.Sum(s => s.Info.Tokens)} tokens", stdout);
            Assert.Contains($"rows of 9 tokens ({data.TrainRows} train, {data.ValRows} validation)", stdout);
        }
        Assert.Contains("[tokenised:", stdout);

        // A second run reuses the caches.
        (exit, stdout, stderr) = Run(DataPrepareCommand.CreatePrepare(), "--spec", Path.Combine(outDir, "data.json"), "--tokenizer", tok, "--out", outDir);
        Assert.True(exit == 0, stderr);
        Assert.DoesNotContain("[tokenised:", stdout);
        Assert.Contains("[cached:", stdout);

        (exit, stdout, stderr) = Run(DataPrepareCommand.CreateInspect(), "--data", outDir, "--tokenizer", tok, "--rows", "3");
        Assert.True(exit == 0, stderr);
        Assert.Contains("--- row 2:", stdout);
        Assert.DoesNotContain("--- row 3:", stdout);
        Assert.Contains("</s>", stdout);   // special tokens are shown

        (exit, stdout, stderr) = Run(DataPrepareCommand.CreateInspect(), "--data", outDir, "--tokenizer", tok, "--split", "val", "--rows", "1");
        Assert.True(exit == 0, stderr);
        Assert.Contains("--- row 0: source 0", stdout);
    }

    [Fact]
    public void Gsm8k_format_and_fields_are_passed_through()
    {
        string qa = _kit.Write("qa.jsonl", "{\"question\": \"w1\", \"answer\": \"w2\"}\n");
        string tok = _kit.WriteTokenizer();
        string outDir = Path.Combine(_kit.Dir, "out");
        var (exit, _, stderr) = Run(DataPrepareCommand.CreatePrepare(), "--source", qa, "--format", "gsm8k", "--tokenizer", tok, "--seq-len", "4", "--out", outDir);
        Assert.True(exit == 0, stderr);
        Assert.Equal(SourceFormat.Gsm8k, DataSpec.Load(Path.Combine(outDir, "data.json")).Sources[0].Format);

        (exit, _, stderr) = Run(DataPrepareCommand.CreatePrepare(), "--source", qa, "--template", "{answer}\\n{question}", "--tokenizer", tok, "--out", outDir);
        Assert.True(exit == 0, stderr);
        Assert.Equal("{answer}\n{question}", DataSpec.Load(Path.Combine(outDir, "data.json")).Sources[0].Template);
    }

    [Fact]
    public void User_errors_are_one_line_and_exit_1()
    {
        string tok = _kit.WriteTokenizer();
        string outDir = Path.Combine(_kit.Dir, "out");
        string a = _kit.WriteJsonl("a.jsonl", [Words(1)]);
        string bad = _kit.Write("bad.jsonl", "{\"text\": \"w1\"}\n{oops\n");

        var cases = new (string[] Args, string Expected)[]
        {
            (["--source", Path.Combine(_kit.Dir, "missing.jsonl"), "--tokenizer", tok, "--out", outDir], "Data source not found"),
            (["--source", bad, "--tokenizer", tok, "--out", outDir], $"{bad}:2: not valid JSON"),
            (["--source", a, "--weight", "1", "--weight", "2", "--tokenizer", tok, "--out", outDir], "--weight given 2 time(s) for 1 --source(s)"),
            (["--source", a, "--tokenizer", tok, "--seq-len", "0", "--out", outDir], "\"seq_len\" must be ≥ 1"),
            (["--tokenizer", tok, "--out", outDir], "give at least one --source"),
        };
        foreach (var (args, expected) in cases)
        {
            var (exit, _, stderr) = Run(DataPrepareCommand.CreatePrepare(), args);
            Assert.Equal(1, exit);
            Assert.Contains(expected, stderr);
            Assert.Single(stderr.TrimEnd().Split('\n'));
        }

        var (code, _, err) = Run(DataPrepareCommand.CreatePrepare(), "--source", bad, "--skip-bad-lines", "--tokenizer", tok, "--out", outDir);
        Assert.True(code == 0, err);

        (code, _, err) = Run(DataPrepareCommand.CreateInspect(), "--data", _kit.Dir, "--tokenizer", tok);
        Assert.Equal(1, code);
        Assert.Contains("has no data.json", err);
    }
}
