using Recur.Tokenization;
using Xunit;

namespace Recur.Tests.Tokenization;

/// <summary>
/// Loader behaviour that needs no shared assets: a tiny word-level tokenizer.json written by the
/// test itself, and broken files.
/// </summary>
public sealed class TokenizerLoaderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("recur-tok-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string TinyTokenizerJson = """
        {
          "version": "1.0",
          "truncation": TRUNCATION,
          "padding": null,
          "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
          ],
          "normalizer": null,
          "pre_tokenizer": {"type": "Whitespace"},
          "post_processor": null,
          "decoder": null,
          "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "world": 4}, "unk_token": "<unk>"}
        }
        """;

    private string Write(string name, string content)
    {
        string path = Path.Combine(_dir, name);
        File.WriteAllText(path, content);
        return path;
    }

    private string WriteTiny(string truncation = "null") =>
        Write("tokenizer.json", TinyTokenizerJson.Replace("TRUNCATION", truncation));

    [Fact]
    public void Tiny_tokenizer_without_side_files_adds_nothing()
    {
        WriteTiny();
        using var tok = TokenizerLoader.Load(_dir);
        Assert.Equal([3, 4], tok.Encode("hello world"));
        Assert.Equal([3, 4], tok.Encode("hello world", addSpecialTokens: false));
        Assert.False(tok.AddBosByDefault);
        Assert.Equal(5, tok.VocabSize);
        // No config: BOS/EOS are recognised by their usual names among the special tokens.
        Assert.Equal((1, 2), (tok.BosId, tok.EosId));
        Assert.Equal("hello world", tok.Decode([1, 3, 4, 2]));
        Assert.Equal("<s> hello world </s>", tok.Decode([1, 3, 4, 2], skipSpecialTokens: false));
    }

    [Fact]
    public void Tokenizer_config_flags_and_object_token_names_are_honoured()
    {
        WriteTiny();
        Write("tokenizer_config.json", """
            {"add_bos_token": true, "add_eos_token": true,
             "bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>"}
            """);
        using var tok = TokenizerLoader.Load(Path.Combine(_dir, "tokenizer.json"));
        Assert.True(tok.AddBosByDefault);
        Assert.Equal([1, 3, 4, 2], tok.Encode("hello world"));
        Assert.Equal([3, 4], tok.Encode("hello world", addSpecialTokens: false));
        Assert.Equal([1, 2], tok.Encode(""));
    }

    [Fact]
    public void Special_tokens_map_and_generation_config_set_eos_and_stop_ids()
    {
        WriteTiny();
        Write("tokenizer_config.json", """{"eos_token": "</s>"}""");
        Write("special_tokens_map.json", """{"eos_token": {"content": "<unk>"}}""");
        Write("generation_config.json", """{"eos_token_id": [0, 4]}""");
        using var tok = TokenizerLoader.Load(_dir);
        Assert.Equal(0, tok.EosId);
        Assert.Equal([0, 4], tok.StopIds);
    }

    [Fact]
    public void Truncation_stored_in_the_file_is_not_applied()
    {
        WriteTiny("""{"direction": "Right", "max_length": 1, "strategy": "LongestFirst", "stride": 0}""");
        using var tok = TokenizerLoader.Load(_dir);
        Assert.Equal([3, 4], tok.Encode("hello world"));
    }

    [Fact]
    public void Missing_path_names_the_path()
    {
        string missing = Path.Combine(_dir, "nope");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(missing));
        Assert.Contains(missing, e.Message);
        Assert.Contains("does not exist", e.Message);
    }

    [Fact]
    public void Folder_without_tokenizer_names_the_folder_and_the_expected_files()
    {
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(_dir));
        Assert.Contains(_dir, e.Message);
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("tokenizer.model", e.Message);
    }

    [Fact]
    public void Corrupt_tokenizer_json_names_the_file()
    {
        string path = Write("tokenizer.json", "{\"model\": {\"vocab\": ");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(_dir));
        Assert.Contains(path, e.Message);
        Assert.Contains("not valid JSON", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Json_that_is_not_a_tokenizer_names_the_file()
    {
        string path = Write("vocab.json", """{"hello": 1}""");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("\"model\"", e.Message);
    }

    [Fact]
    public void Side_file_given_as_tokenizer_is_refused()
    {
        string path = Write("tokenizer_config.json", "{}");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("side file", e.Message);
    }

    [Fact]
    public void Corrupt_tokenizer_config_names_the_config_file()
    {
        WriteTiny();
        string config = Write("tokenizer_config.json", "{\"add_bos_token\": tru");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(_dir));
        Assert.Contains(config, e.Message);
        Assert.Contains("tokenizer_config.json", e.Message);
    }

    [Fact]
    public void Config_with_wrong_types_names_the_field()
    {
        WriteTiny();
        Write("tokenizer_config.json", """{"add_bos_token": "yes"}""");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(_dir));
        Assert.Contains("add_bos_token", e.Message);
    }

    [Fact]
    public void Bos_token_missing_from_the_vocabulary_is_reported()
    {
        WriteTiny();
        Write("tokenizer_config.json", """{"bos_token": "<|begin_of_text|>"}""");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(_dir));
        Assert.Contains("<|begin_of_text|>", e.Message);
        Assert.Contains("bos_token", e.Message);
    }

    [Fact]
    public void Corrupt_sentencepiece_model_names_the_file()
    {
        string path = Path.Combine(_dir, "tokenizer.model");
        File.WriteAllBytes(path, [0x0a, 0xff, 0xff, 0x00, 0x13]);
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(_dir));
        Assert.Contains(path, e.Message);
        Assert.Contains("SentencePiece", e.Message);
    }

    [Fact]
    public void Unknown_file_kind_is_refused()
    {
        string path = Write("tokenizer.txt", "hello");
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void CheckFitsModel_rejects_a_model_smaller_than_the_tokenizer()
    {
        string path = WriteTiny();
        using var tok = TokenizerLoader.Load(path);
        TokenizerLoader.CheckFitsModel(tok, 5, path);
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.CheckFitsModel(tok, 4, path));
        Assert.Contains(path, e.Message);
        Assert.Contains("vocab_size is 4", e.Message);
    }

    [Fact]
    public void User_exception_messages_are_one_line()
    {
        var e = new RecurUserException("first\nsecond\r\n third");
        Assert.Equal("first second third", e.Message);
    }
}
