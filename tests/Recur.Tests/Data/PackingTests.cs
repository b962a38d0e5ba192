using Recur.Data;
using Recur.Model;
using Xunit;
using static Recur.Tests.Data.DataTestKit;

namespace Recur.Tests.Data;

/// <summary>Document layout and TRL "wrapped" packing (METHOD §5), checked against token streams written by hand.</summary>
public sealed class PackingTests : IDisposable
{
    private readonly DataTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    private static (long[] Inputs, long[] Labels) Row(PackedDataset data, int source, long row)
    {
        var inputs = new long[data.SeqLen];
        var labels = new long[data.SeqLen];
        data.ReadRow(source, row, inputs, labels);
        return (inputs, labels);
    }

    [Fact]
    public void Documents_are_bos_tokens_eos_and_straddle_rows()
    {
        int[][] docs = [[4, 5, 6], [7, 8, 9, 10, 11], [12, 13]];
        string path = _kit.WriteJsonl("a.jsonl", docs.Select(d => Words(d)));
        using var tok = _kit.LoadTokenizer(addBos: true);
        using var data = PackedDataset.Open(Spec(5, path), tok, _kit.Cache);

        var stream = DataTestKit.Stream(docs, bos: true);   // 5 + 7 + 4 = 16 tokens
        Assert.Equal(16, stream.Count);
        var src = data.Sources[0];
        Assert.Equal(3, src.Info.Documents);
        Assert.Equal(16, src.Info.Tokens);
        Assert.Equal(3, src.Rows);                            // rows of 6: 6, 6, 4 tokens

        for (int r = 0; r < 2; r++)
        {
            var (inputs, labels) = Row(data, 0, r);
            Assert.Equal(stream.Skip(r * 6).Take(5), inputs);
            Assert.Equal(stream.Skip(r * 6 + 1).Take(5), labels);
        }
        // Row 0 = BOS w4 w5 w6 EOS | BOS: the second document starts inside row 0 and ends in row 1.
        Assert.Equal([Bos, W(4), W(5), W(6), Eos], Row(data, 0, 0).Inputs);
        Assert.Equal(Bos, Row(data, 0, 0).Labels[^1]);

        // The final row holds the last 4 tokens, padded with EOS; padding is never a label.
        var (lastIn, lastLab) = Row(data, 0, 2);
        Assert.Equal([stream[12], stream[13], stream[14], stream[15], Eos], lastIn);
        Assert.Equal([stream[13], stream[14], stream[15], Loss.IgnoreIndex, Loss.IgnoreIndex], lastLab);
        Assert.Equal(Eos, data.PadId);
    }

    [Fact]
    public void A_one_token_remainder_row_has_no_supervised_label()
    {
        // 2 docs of 2 words without BOS: 3 + 3 = 6 tokens, rows of 5 → 5 + 1.
        string path = _kit.WriteJsonl("a.jsonl", [Words(1, 2), Words(3, 4)]);
        using var tok = _kit.LoadTokenizer(addBos: false);
        using var data = PackedDataset.Open(Spec(4, path), tok, _kit.Cache);
        Assert.Equal(2, data.Sources[0].Rows);
        var (inputs, labels) = Row(data, 0, 1);
        Assert.Equal([Eos, Eos, Eos, Eos], inputs);          // the real last token (EOS) then EOS padding
        Assert.All(labels, l => Assert.Equal(Loss.IgnoreIndex, l));
        var batch = data.ReadRows([new RowRef(0, 0), new RowRef(0, 1)]);
        Assert.Equal(4, batch.SupervisedTokens);
    }

    [Fact]
    public void Without_bos_in_the_tokenizer_documents_are_tokens_then_eos()
    {
        int[][] docs = [[1], [2, 3], [4, 5, 6]];
        string path = _kit.WriteJsonl("a.jsonl", docs.Select(d => Words(d)));
        using var tok = _kit.LoadTokenizer(addBos: false);
        Assert.False(tok.AddBosByDefault);
        using var data = PackedDataset.Open(Spec(100, path), tok, _kit.Cache);
        var stream = DataTestKit.Stream(docs, bos: false);
        var (inputs, labels) = Row(data, 0, 0);
        Assert.Equal(stream, inputs.Take(stream.Count));
        Assert.Equal(stream.Skip(1), labels.Take(stream.Count - 1));
        Assert.All(labels.Skip(stream.Count - 1), l => Assert.Equal(Loss.IgnoreIndex, l));
    }

    [Fact]
    public void Text_is_stripped_and_empty_documents_are_skipped_and_counted()
    {
        string path = _kit.WriteJsonl("a.jsonl", ["  \n w1 w2 \t\n", "   ", "\u001fw3\u00a0"]);
        using var tok = _kit.LoadTokenizer(addBos: true);
        using var data = PackedDataset.Open(Spec(100, path), tok, _kit.Cache);
        Assert.Equal(2, data.Sources[0].Info.Documents);
        Assert.Equal(1, data.Sources[0].Info.EmptyDocuments);
        var stream = DataTestKit.Stream([[1, 2], [3]], bos: true);
        Assert.Equal(stream, Row(data, 0, 0).Inputs.Take(stream.Count));
    }

    [Fact]
    public void Text_files_are_one_document_or_one_per_paragraph()
    {
        string path = _kit.Write("book.txt", "w1 w2\r\nw3\n\nw4\n   \n\n w5 w6 \n");
        using var tok = _kit.LoadTokenizer(addBos: false);
        var whole = Spec(100, path);
        using (var data = PackedDataset.Open(whole, tok, _kit.Cache))
        {
            Assert.Equal(1, data.Sources[0].Info.Documents);
            Assert.Equal(DataTestKit.Stream([[1, 2, 3, 4, 5, 6]], bos: false), Row(data, 0, 0).Inputs.Take(7));
        }
        var paragraphs = whole with { Sources = [whole.Sources[0] with { TextUnit = TextUnit.Paragraph }] };
        using (var data = PackedDataset.Open(paragraphs, tok, _kit.Cache))
        {
            Assert.Equal(3, data.Sources[0].Info.Documents);
            var stream = DataTestKit.Stream([[1, 2, 3], [4], [5, 6]], bos: false);
            Assert.Equal(stream, Row(data, 0, 0).Inputs.Take(stream.Count));
        }
    }

    [Fact]
    public void Templates_and_the_gsm8k_preset_build_documents_from_fields()
    {
        string path = _kit.Write("qa.jsonl", "{\"question\": \"w1 w2\", \"answer\": \"w3\", \"other\": 5}\n\n{\"question\": \"w4\", \"answer\": 42}\n");
        using var tok = _kit.LoadTokenizer(addBos: false);
        int q = tok.TokenToId("Question")!.Value, a = tok.TokenToId("Answer")!.Value, colon = tok.TokenToId(":")!.Value;

        var gsm = new DataSpec { Sources = [new DataSourceSpec { Path = path, Format = SourceFormat.Gsm8k }], SeqLen = 100 };
        using (var data = PackedDataset.Open(gsm, tok, _kit.Cache))
        {
            Assert.Equal(2, data.Sources[0].Info.Documents);
            // "Question: w1 w2\nAnswer: w3" then EOS; the number 42 is not in the vocabulary (<unk> = 0).
            long[] expected = [q, colon, W(1), W(2), a, colon, W(3), Eos, q, colon, W(4), a, colon, 0, Eos];
            Assert.Equal(expected, Row(data, 0, 0).Inputs.Take(expected.Length));
        }

        var custom = new DataSpec { Sources = [new DataSourceSpec { Path = path, Format = SourceFormat.Jsonl, Template = "{answer} w9 {question}" }], SeqLen = 100 };
        using (var data = PackedDataset.Open(custom, tok, _kit.Cache))
        {
            long[] expected = [W(3), W(9), W(1), W(2), Eos];
            Assert.Equal(expected, Row(data, 0, 0).Inputs.Take(expected.Length));
        }

        var fields = new DataSpec { Sources = [new DataSourceSpec { Path = path, Fields = ["answer", "question"] }], SeqLen = 100 };
        using (var data = PackedDataset.Open(fields, tok, _kit.Cache))
        {
            long[] expected = [W(3), W(1), W(2), Eos];
            Assert.Equal(expected, Row(data, 0, 0).Inputs.Take(expected.Length));
        }
    }

    [Fact]
    public void Large_vocabularies_are_stored_as_uint32()
    {
        int[][] docs = [[65990, 3], [70000]];
        string path = _kit.WriteJsonl("a.jsonl", docs.Select(d => Words(d)));
        using var small = _kit.LoadTokenizer("small", addBos: true, words: 100);
        using (var data = PackedDataset.Open(Spec(8, path), small, _kit.Cache))
            Assert.Equal("uint16", data.Sources[0].Info.DType);

        using var big = _kit.LoadTokenizer("big", addBos: true, words: 70001);
        Assert.True(big.VocabSize > 65536);
        using var data32 = PackedDataset.Open(Spec(8, path), big, _kit.Cache);
        Assert.Equal("uint32", data32.Sources[0].Info.DType);
        Assert.Equal(4, data32.Sources[0].Tokens.BytesPerToken);
        var expected = DataTestKit.Stream(docs, bos: true);
        Assert.Equal(expected, Row(data32, 0, 0).Inputs.Take(expected.Count));
    }

    [Fact]
    public void Batch_tensors_are_int64_batch_by_seq_len()
    {
        string path = _kit.WriteRandomJsonl("a.jsonl", docs: 20, maxWords: 9, seed: 3);
        using var tok = _kit.LoadTokenizer();
        using var data = PackedDataset.Open(Spec(7, path), tok, _kit.Cache);
        var batch = data.Train(4).NextRows();
        var (inputs, labels) = batch.ToTensors();
        using (inputs)
        using (labels)
        {
            Assert.Equal([4L, 7L], inputs.shape);
            Assert.Equal([4L, 7L], labels.shape);
            Assert.Equal(TorchSharp.torch.ScalarType.Int64, inputs.dtype);
            Assert.Equal(batch.Inputs, inputs.data<long>().ToArray());
            Assert.Equal(batch.Labels, labels.data<long>().ToArray());
        }
    }
}
