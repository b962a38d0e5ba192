using Recur.Tasks;
using Xunit;

namespace Recur.Tests.Tasks;

public class LoadingErrorTests
{
    const string Good = "{\"question\": \"q\", \"answer\": \"a #### 1\"}";

    static RecurUserException Fails(string path, TaskLoadOptions? o = null) =>
        Assert.Throws<RecurUserException>(() => Gsm8kTask.LoadDocs(path, o));

    [Fact]
    public void Missing_file_is_named()
    {
        var p = Path.Combine(Path.GetTempPath(), $"recur-no-such-{Guid.NewGuid():N}.jsonl");
        var e = Fails(p);
        Assert.Contains(p, e.Message);
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void Empty_file_is_named()
    {
        var p = TaskFixtures.TempFile("\n  \n");
        var e = Fails(p);
        Assert.Contains(p, e.Message);
        Assert.Contains("empty", e.Message);
    }

    [Fact]
    public void Malformed_line_names_file_and_line()
    {
        var p = TaskFixtures.TempFile($"{Good}\n{{\"question\": \"q\", \n{Good}\n");
        var e = Fails(p);
        Assert.Contains($"{p}:2:", e.Message);
        Assert.Contains("not valid JSON", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Non_object_line_is_rejected()
    {
        var p = TaskFixtures.TempFile($"{Good}\n[1, 2]\n");
        Assert.Contains($"{p}:2: expected a JSON object", Fails(p).Message);
    }

    [Fact]
    public void Missing_field_names_field_and_line()
    {
        var p = TaskFixtures.TempFile($"{Good}\n\n{{\"question\": \"q\"}}\n");
        Assert.Contains($"{p}:3: missing field 'answer'", Fails(p).Message);
    }

    [Fact]
    public void Wrongly_typed_field_is_named()
    {
        var p = TaskFixtures.TempFile("{\"question\": 5, \"answer\": \"#### 1\"}\n");
        Assert.Contains($"{p}:1: field 'question' must be a string (got number)", Fails(p).Message);
    }

    [Fact]
    public void Skip_bad_lines_goes_on_and_counts_them()
    {
        var p = TaskFixtures.TempFile($"{Good}\nnot json\n{{\"question\": \"q\"}}\n{Good}\n");
        var data = Gsm8kTask.LoadDocs(p, new TaskLoadOptions(SkipBadLines: true));
        Assert.Equal(2, data.Docs.Count);
        Assert.Equal([1, 4], data.Docs.Select(d => d.Line));
        Assert.Equal(2, data.SkippedLines);
        var w = Assert.Single(data.Warnings);
        Assert.Contains("skipped 2 bad lines", w);
        Assert.Contains($"{p}:2", w);
    }

    [Fact]
    public void Only_bad_lines_is_an_error_even_when_skipping()
    {
        var p = TaskFixtures.TempFile("nope\n");
        Assert.Contains("no usable lines", Fails(p, new TaskLoadOptions(SkipBadLines: true)).Message);
    }

    [Fact]
    public void Limit_larger_than_the_data_uses_all_and_warns()
    {
        var data = Gsm8kTask.LoadDocs(TaskFixtures.Path("gsm8k_test.jsonl"), new TaskLoadOptions(Limit: 10));
        Assert.Equal(3, data.Docs.Count);
        var w = Assert.Single(data.Warnings);
        Assert.Contains("limit 10", w);
        Assert.Contains("using all 3", w);
    }

    [Fact]
    public void Limit_stops_reading_before_later_bad_lines()
    {
        var p = TaskFixtures.TempFile($"{Good}\n{Good}\nbroken\n");
        var data = Gsm8kTask.LoadDocs(p, new TaskLoadOptions(Limit: 2));
        Assert.Equal(2, data.Docs.Count);
        Assert.Empty(data.Warnings);
        Assert.Contains("limit must be at least 1", Fails(p, new TaskLoadOptions(Limit: 0)).Message);
    }

    [Fact]
    public void Answer_without_hashes_warns_and_uses_the_whole_answer()
    {
        var p = TaskFixtures.TempFile("{\"question\": \"q\", \"answer\": \" 42 \"}\n");
        var data = Gsm8kTask.LoadDocs(p);
        Assert.Equal("42", data.Docs[0].Gold);
        Assert.Contains("without '#### N'", Assert.Single(data.Warnings));
    }
}
