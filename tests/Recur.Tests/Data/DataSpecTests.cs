using Recur.Data;
using Xunit;

namespace Recur.Tests.Data;

/// <summary>The JSON data spec: snake_case keys, path resolution, and validation messages.</summary>
public sealed class DataSpecTests : IDisposable
{
    private readonly DataTestKit _kit = new();

    public void Dispose() => _kit.Dispose();

    [Fact]
    public void Spec_reads_snake_case_json_and_resolves_relative_paths()
    {
        string file = _kit.Write("recipes/math.json", """
            {
              // comments are allowed in recipe files
              "sources": [
                {"path": "../data/fineweb", "weight": 1},
                {"path": "/abs/gsm8k.jsonl", "weight": 0.5, "format": "gsm8k", "skip_bad_lines": true},
                {"path": "books", "format": "text", "text_unit": "paragraph"},
                {"path": "qa.parquet", "template": "Q: {q}\nA: {a}"}
              ],
              "seq_len": 512,
              "val_fraction": 0.01,
              "seed": 42,
            }
            """);
        var spec = DataSpec.Load(file);
        Assert.Equal(512, spec.SeqLen);
        Assert.Equal(0.01, spec.ValFraction);
        Assert.Null(spec.ValRows);
        Assert.Equal(42, spec.Seed);
        Assert.Equal(Path.Combine(_kit.Dir, "data", "fineweb"), spec.Sources[0].Path);
        Assert.Equal("/abs/gsm8k.jsonl", spec.Sources[1].Path);
        Assert.Equal(SourceFormat.Gsm8k, spec.Sources[1].Format);
        Assert.True(spec.Sources[1].SkipBadLines);
        Assert.Equal(0.5, spec.Sources[1].Weight);
        Assert.Equal(TextUnit.Paragraph, spec.Sources[2].TextUnit);
        Assert.Equal("Q: {q}\nA: {a}", spec.Sources[3].EffectiveTemplate);
        Assert.Equal(DataSourceSpec.Gsm8kTemplate, spec.Sources[1].EffectiveTemplate);
        Assert.Equal("{text}", spec.Sources[0].EffectiveTemplate);

        // Written JSON reads back to the same values.
        var again = DataSpec.FromJson(spec.ToJson(), "/elsewhere");
        Assert.Equal(spec.ToJson(), again.ToJson());
        Assert.Contains("\"seq_len\": 512", spec.ToJson());
        Assert.Contains("\"format\": \"gsm8k\"", spec.ToJson());
    }

    [Fact]
    public void Defaults_are_the_papers()
    {
        var spec = DataSpec.FromJson("""{"sources": [{"path": "a.jsonl"}]}""", "/data");
        Assert.Equal(1024, spec.SeqLen);   // METHOD §4.1
        Assert.Equal(74, spec.Seed);       // METHOD §4.1
        Assert.Null(spec.ValFraction);
        Assert.Equal(1.0, spec.Sources[0].Weight);
        Assert.Equal(SourceFormat.Auto, spec.Sources[0].Format);
        Assert.Equal(TextUnit.File, spec.Sources[0].TextUnit);
    }

    [Theory]
    [InlineData("""{"sources": [{"path": "a"}], "val_fracton": 0.1}""", "val_fracton")]
    [InlineData("""{"sources": [{"path": "a", "format": "xml"}]}""", "$.sources[0].format")]
    [InlineData("""{"sources": []}""", "\"sources\" is empty")]
    [InlineData("""{"sources": [{"path": "a"}], "seq_len": 0}""", "\"seq_len\" must be ≥ 1 (got 0)")]
    [InlineData("""{"sources": [{"path": "a"}], "val_fraction": 1}""", "\"val_fraction\" must be in [0, 1) (got 1)")]
    [InlineData("""{"sources": [{"path": "a"}], "val_fraction": 0.1, "val_rows": 3}""", "either \"val_fraction\" or \"val_rows\"")]
    [InlineData("""{"sources": [{"path": "a"}], "val_rows": -1}""", "\"val_rows\" must be ≥ 0")]
    [InlineData("""{"sources": [{"path": "a", "weight": 0}]}""", "sources[0] ('/d/a'): \"weight\" must be a positive number (got 0)")]
    [InlineData("""{"sources": [{"weight": 1}]}""", "sources[0]: \"path\" is missing")]
    [InlineData("""{"sources": [{"path": "a", "fields": ["t"], "template": "{t}"}]}""", "either \"fields\" or \"template\"")]
    [InlineData("""{"sources": [{"path": "a", "fields": []}]}""", "\"fields\" must list one or more")]
    [InlineData("""{"sources": [{"path": "a", "format": "gsm8k", "fields": ["q"]}]}""", "format \"gsm8k\" fixes the template")]
    [InlineData("""{"sources": [{"path": "a", "format": "text", "template": "{q}"}]}""", "do not apply to format \"text\"")]
    [InlineData("""{"sources": [{"path": "a", "template": "no fields"}]}""", "names no {field}")]
    [InlineData("""{"sources": [{"path": "a", "template": "{q"}]}""", "unclosed '{' at position 0")]
    public void Invalid_specs_say_which_key_and_what_was_expected(string json, string expected)
    {
        var e = Assert.Throws<RecurUserException>(() => DataSpec.FromJson(json, "/d", "spec.json"));
        Assert.StartsWith("spec.json", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
