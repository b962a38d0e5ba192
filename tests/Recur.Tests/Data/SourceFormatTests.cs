using System.IO.Compression;
using System.Text;
using Parquet;
using Parquet.Schema;
using Recur.Data;
using Xunit;
using static Recur.Tests.Data.DataTestKit;

namespace Recur.Tests.Data;

/// <summary>Reading sources: Parquet, JSONL (malformed lines), gzip, folders, missing and empty files.</summary>
public sealed class SourceFormatTests : IDisposable
{
    private readonly DataTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    private PackedDataset Open(DataSpec spec, bool addBos = false)
    {
        using var tok = _kit.LoadTokenizer(addBos: addBos);
        return PackedDataset.Open(spec, tok, _kit.Cache);
    }

    private static long[] FirstRow(PackedDataset data, int source = 0)
    {
        var inputs = new long[data.SeqLen];
        data.ReadRow(source, 0, inputs, new long[data.SeqLen]);
        return inputs;
    }

    /// <summary>A Hugging Face style shard: a nullable "text" column and an int "id" column, in several row groups.</summary>
    private string WriteParquet(string name, string?[][] rowGroups, string column = "text")
    {
        string path = Path.Combine(_kit.Dir, name);
        var schema = new ParquetSchema(new DataField<string>(column, nullable: true), new DataField<int>("id"));
        using (var fs = File.Create(path))
        {
            var writer = ParquetWriter.CreateAsync(schema, fs).GetAwaiter().GetResult();
            int id = 0;
            foreach (var group in rowGroups)
            {
                using var rg = writer.CreateRowGroup();
                rg.WriteAsync(schema.DataFields[0], group!).GetAwaiter().GetResult();
                rg.WriteAsync<int>(schema.DataFields[1], group.Select(_ => id++).ToArray()).GetAwaiter().GetResult();
            }
            // The footer is written on disposal, which Parquet.Net only offers asynchronously.
            writer.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        return path;
    }

    [Fact]
    public void Parquet_text_column_is_read_across_row_groups_in_order()
    {
        string path = WriteParquet("train-00000-of-00001.parquet", [[Words(1, 2), Words(3)], [Words(4)], [Words(5, 6, 7)]]);
        using var data = Open(Spec(64, path));
        Assert.Equal(4, data.Sources[0].Info.Documents);
        Assert.Equal("parquet", data.Sources[0].Info.Source.Files[0].Container);
        var expected = DataTestKit.Stream([[1, 2], [3], [4], [5, 6, 7]], bos: false);
        Assert.Equal(expected, FirstRow(data).Take(expected.Count));
    }

    [Fact]
    public void Parquet_nulls_fail_with_their_position_or_are_skipped()
    {
        string path = WriteParquet("a.parquet", [[Words(1)], [Words(2), null, Words(3)]]);
        var e = Assert.Throws<RecurUserException>(() => Open(Spec(64, path)));
        Assert.Contains("a.parquet: row group 1, row 1", e.Message);
        Assert.Contains("skip_bad_lines", e.Message);

        var skip = Spec(64, path);
        skip = skip with { Sources = [skip.Sources[0] with { SkipBadLines = true }] };
        using var data = Open(skip);
        Assert.Equal(3, data.Sources[0].Info.Documents);
        Assert.Equal(1, data.Sources[0].Info.BadRecords);
    }

    [Fact]
    public void Parquet_without_the_text_column_names_the_columns_it_has()
    {
        string path = WriteParquet("a.parquet", [[Words(1)]], column: "content");
        var e = Assert.Throws<RecurUserException>(() => Open(Spec(64, path)));
        Assert.Contains("no column \"text\"", e.Message);
        Assert.Contains("\"content\"", e.Message);
        var withField = Spec(64, path);
        using var data = Open(withField with { Sources = [withField.Sources[0] with { Fields = ["content"] }] });
        Assert.Equal(1, data.Sources[0].Info.Documents);

        var intColumn = withField with { Sources = [withField.Sources[0] with { Fields = ["id"] }] };
        Assert.Contains("expected a string column", Assert.Throws<RecurUserException>(() => Open(intColumn)).Message);
    }

    [Fact]
    public void A_broken_parquet_file_is_a_user_error()
    {
        string path = _kit.Write("bad.parquet", "this is not parquet at all");
        var e = Assert.Throws<RecurUserException>(() => Open(Spec(64, path)));
        Assert.Contains("bad.parquet", e.Message);
    }

    [Fact]
    public void Malformed_jsonl_names_file_and_line_or_is_skipped_and_counted()
    {
        string path = _kit.Write("a.jsonl", "{\"text\": \"w1\"}\n{\"text\": \"w2\"}\n{\"text\": oops}\n[1, 2]\n{\"body\": \"w3\"}\n{\"text\": null}\n{\"text\": \"w4\"}\n");
        var e = Assert.Throws<RecurUserException>(() => Open(Spec(64, path)));
        Assert.StartsWith($"{path}:3: not valid JSON", e.Message);
        Assert.Contains("skip_bad_lines", e.Message);

        var spec = Spec(64, path);
        spec = spec with { Sources = [spec.Sources[0] with { SkipBadLines = true }] };
        using var data = Open(spec);
        Assert.Equal(3, data.Sources[0].Info.Documents);
        Assert.Equal(4, data.Sources[0].Info.BadRecords);
        var expected = DataTestKit.Stream([[1], [2], [4]], bos: false);
        Assert.Equal(expected, FirstRow(data).Take(expected.Count));
    }

    [Theory]
    [InlineData("{\"body\": \"w1\"}", "no \"text\" field (the object has keys \"body\")")]
    [InlineData("{\"text\": [\"w1\"]}", "\"text\" is an array; expected a string")]
    [InlineData("\"w1\"", "expected a JSON object, got a string")]
    [InlineData("[{\"text\": \"w1\"}]", "JSON array")]
    public void Jsonl_errors_say_what_is_wrong(string line, string expected)
    {
        string path = _kit.Write("a.jsonl", line + "\n");
        var e = Assert.Throws<RecurUserException>(() => Open(Spec(64, path)));
        Assert.StartsWith($"{path}:1: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Gzipped_jsonl_is_read_through()
    {
        string path = Path.Combine(_kit.Dir, "a.jsonl.gz");
        using (var fs = File.Create(path))
        using (var gz = new GZipStream(fs, CompressionLevel.Fastest))
            gz.Write(Encoding.UTF8.GetBytes("{\"text\": \"w1 w2\"}\n{\"text\": \"w3\"}\n"));
        using var data = Open(Spec(64, path));
        Assert.Equal(2, data.Sources[0].Info.Documents);
        Assert.Equal("jsonl+gzip", data.Sources[0].Info.Source.Files[0].Container);
    }

    [Fact]
    public void A_folder_source_reads_its_data_files_in_path_order_and_ignores_the_rest()
    {
        _kit.WriteJsonl("ds/data/b.jsonl", [Words(2)]);
        _kit.WriteJsonl("ds/data/a.jsonl", [Words(1)]);
        _kit.Write("ds/notes.txt", "w3");
        _kit.Write("ds/README.md", "w9 w9 w9");
        _kit.Write("ds/LICENSE", "w9");
        _kit.Write("ds/.cache/x.jsonl", "not even json");
        using var data = Open(Spec(64, Path.Combine(_kit.Dir, "ds")));
        var files = data.Sources[0].Info.Source.Files.Select(f => Path.GetRelativePath(Path.Combine(_kit.Dir, "ds"), f.Path));
        Assert.Equal(["data/a.jsonl", "data/b.jsonl", "notes.txt"], files);
        var expected = DataTestKit.Stream([[1], [2], [3]], bos: false);
        Assert.Equal(expected, FirstRow(data).Take(expected.Count));
    }

    [Fact]
    public void Missing_and_empty_sources_are_clear_errors()
    {
        string missing = Path.Combine(_kit.Dir, "nope.jsonl");
        var e = Assert.Throws<RecurUserException>(() => Open(Spec(8, missing)));
        Assert.Contains("not found", e.Message);
        Assert.Contains(missing, e.Message);

        string empty = _kit.Write("empty.jsonl", "");
        e = Assert.Throws<RecurUserException>(() => Open(Spec(8, empty)));
        Assert.Contains($"'{empty}' is empty", e.Message);

        string blank = _kit.Write("blank.txt", "  \n\n ");
        e = Assert.Throws<RecurUserException>(() => Open(Spec(8, blank)));
        Assert.Contains("has no documents", e.Message);
        Assert.Empty(Directory.Exists(_kit.Cache) ? Directory.GetFiles(_kit.Cache) : []);

        Directory.CreateDirectory(Path.Combine(_kit.Dir, "nodata"));
        _kit.Write("nodata/README.md", "hi");
        e = Assert.Throws<RecurUserException>(() => Open(Spec(8, Path.Combine(_kit.Dir, "nodata"))));
        Assert.Contains("has no .parquet, .jsonl", e.Message);
    }

    [Fact]
    public void Python_strip_also_removes_ascii_separators()
    {
        Assert.Equal("a b", DocumentReader_PyStrip("\u001c\u001d \t a b\u001e\u001f\u3000\n"));
        Assert.Equal("\u200bx", DocumentReader_PyStrip("\u200bx "));   // zero-width space is not whitespace in Python either
    }

    private static string DocumentReader_PyStrip(string s) => DocumentReader.PyStrip(s);
}
