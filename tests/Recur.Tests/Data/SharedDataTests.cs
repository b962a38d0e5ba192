using System.Text.Json;
using Recur.Data;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;

namespace Recur.Tests.Data;

/// <summary>The pipeline on real assets from ../shared: GSM8K train lines with the Llama 3 tokenizer.</summary>
public sealed class SharedDataTests : IDisposable
{
    private readonly DataTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    [SharedFact("data", "gsm8k", "train.jsonl")]
    public void Gsm8k_lines_tokenise_with_llama3_into_the_expected_stream()
    {
        if (SharedAssets.SkipReason("tokenizers", "llama3") is { } reason)
            Assert.Fail(reason);
        const int lines = 300;
        var head = File.ReadLines(SharedAssets.Path("data", "gsm8k", "train.jsonl")).Take(lines).ToList();
        string path = _kit.Write("gsm8k-head.jsonl", string.Join('\n', head) + "\n");
        using var tok = TokenizerLoader.Load(SharedAssets.Path("tokenizers", "llama3"));

        var spec = new DataSpec { Sources = [new DataSourceSpec { Path = path, Format = SourceFormat.Gsm8k }], SeqLen = 1024, ValRows = 1 };
        using var data = PackedDataset.Open(spec, tok, _kit.Cache);
        var src = data.Sources[0];
        Assert.Equal(lines, src.Info.Documents);
        Assert.Equal("uint32", src.Info.DType);          // 128,256 ids do not fit in uint16

        // Expected: for each line, the tokenizer's own ids of "Question: q\nAnswer: a" followed by EOS.
        // The Llama 3 tokenizer adds no BOS (docs/tokenizers.md), so none is expected.
        Assert.False(tok.AddBosByDefault);
        int eos = tok.EosId!.Value;
        var expected = new List<long>();
        foreach (string line in head)
        {
            using var doc = JsonDocument.Parse(line);
            string q = doc.RootElement.GetProperty("question").GetString()!, a = doc.RootElement.GetProperty("answer").GetString()!;
            expected.AddRange(tok.Encode($"Question: {q}\nAnswer: {a}".Trim()).Select(i => (long)i));
            expected.Add(eos);
        }
        Assert.Equal(expected.Count, src.Info.Tokens);
        var tokens = new long[expected.Count];
        src.Tokens.CopyTo(0, tokens);
        Assert.Equal(expected, tokens);
        Assert.Equal((expected.Count + 1024) / 1025, src.Rows);

        // The first packed row decodes to the first problem.
        var batch = data.ReadRows([new RowRef(0, 0)]);
        string text = tok.Decode([.. batch.Inputs.Take(40).Select(i => (int)i)]);
        Assert.StartsWith("Question: Natalia sold clips", text);
    }
}
