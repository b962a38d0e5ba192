using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;

namespace Recur.Tests.Tokenization;

/// <summary>
/// Checks Recur's tokenizers against ids produced by the Hugging Face reference implementations
/// (tests/fixtures/tokenizers/expected_ids.json, made by tests/reference/tokenizer_ids.mjs) for
/// the tokenizers in ../shared/tokenizers.
/// </summary>
public sealed class TokenizerTests
{
    private static readonly Lazy<JsonElement> Fixture = new(() =>
    {
        string path = System.IO.Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizers", "expected_ids.json");
        return JsonDocument.Parse(File.ReadAllText(path)).RootElement.GetProperty("tokenizers");
    });

    // Loading the 9 MB Llama 3 tokenizer.json takes a moment: share one instance per file.
    private static readonly ConcurrentDictionary<string, Lazy<ITokenizer>> Loaded = new();

    private static ITokenizer Shared(string name) =>
        Loaded.GetOrAdd(name, n => new Lazy<ITokenizer>(() => TokenizerLoader.Load(SharedAssets.Path(FixtureFile(n).Split('/'))))).Value;

    private static string FixtureFile(string name) => Fixture.Value.GetProperty(name).GetProperty("file").GetString()!;

    private static JsonElement Case(string name, int index) => Fixture.Value.GetProperty(name).GetProperty("cases")[index];

    private static int[] Ints(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetInt32())];

    public static TheoryData<string, int> Cases()
    {
        var data = new TheoryData<string, int>();
        foreach (var tokenizer in Fixture.Value.EnumerateObject())
        {
            int count = tokenizer.Value.GetProperty("cases").GetArrayLength();
            for (int i = 0; i < count; i++)
                data.Add(tokenizer.Name, i);
        }
        return data;
    }

    [Fact]
    public void Fixture_covers_three_tokenizers_with_the_same_texts()
    {
        var names = Fixture.Value.EnumerateObject().Select(p => p.Name).ToArray();
        Assert.Equal(["llama3", "mistral-sp-bpe", "llama2-sentencepiece"], names);
        foreach (var name in names)
            Assert.True(Fixture.Value.GetProperty(name).GetProperty("cases").GetArrayLength() >= 15);
    }

    [SharedTheory("tokenizers")]
    [MemberData(nameof(Cases))]
    public void Encode_matches_reference_ids(string tokenizer, int index)
    {
        var c = Case(tokenizer, index);
        string text = c.GetProperty("text").GetString()!;
        var tok = Shared(tokenizer);
        Assert.Equal(Ints(c.GetProperty("ids")), tok.Encode(text));
        Assert.Equal(Ints(c.GetProperty("ids_no_special")), tok.Encode(text, addSpecialTokens: false));
    }

    [SharedTheory("tokenizers")]
    [MemberData(nameof(Cases))]
    public void Decode_matches_reference_text(string tokenizer, int index)
    {
        var c = Case(tokenizer, index);
        var tok = Shared(tokenizer);
        int[] ids = Ints(c.GetProperty("ids"));
        Assert.Equal(c.GetProperty("decoded").GetString(), tok.Decode(ids));
        if (c.TryGetProperty("decoded_with_special", out var withSpecial))
            Assert.Equal(withSpecial.GetString(), tok.Decode(ids, skipSpecialTokens: false));
    }

    [SharedTheory("tokenizers")]
    [MemberData(nameof(Cases))]
    public void Decode_of_a_sequence_starting_mid_text_matches_reference(string tokenizer, int index)
    {
        // Starts on byte pieces, special tokens or "▁" pieces: where leading-space rules differ.
        var c = Case(tokenizer, index);
        Assert.Equal(c.GetProperty("tail_decoded").GetString(), Shared(tokenizer).Decode(Ints(c.GetProperty("tail_ids"))));
    }

    [SharedTheory("tokenizers")]
    [MemberData(nameof(Cases))]
    public void Decode_of_encode_round_trips(string tokenizer, int index)
    {
        string text = Case(tokenizer, index).GetProperty("text").GetString()!;
        var tok = Shared(tokenizer);
        int[] ids = tok.Encode(text);
        // Special tokens written in the text come back only when they are not skipped, and
        // SentencePiece re-adds its dummy-prefix space after them: those texts cannot round-trip.
        bool hasSpecial = tok.Encode(text, addSpecialTokens: false).Any(id => id == tok.BosId || id == tok.EosId || id == 0 && tok.IdToToken(0) == "<unk>" || tok.StopIds.Contains(id));
        if (!hasSpecial)
            Assert.Equal(text, tok.Decode(ids));
    }

    [SharedFact("tokenizers", "llama3")]
    public void Llama3_special_tokens_round_trip_when_not_skipped()
    {
        var tok = Shared("llama3");
        const string text = "<|begin_of_text|>Hello<|eot_id|>";
        Assert.Equal(text, tok.Decode(tok.Encode(text), skipSpecialTokens: false));
    }

    [SharedTheory("tokenizers")]
    [MemberData(nameof(Cases))]
    public void Streaming_decoder_concatenates_to_full_decode(string tokenizer, int index)
    {
        var c = Case(tokenizer, index);
        var tok = Shared(tokenizer);
        int[] ids = Ints(c.GetProperty("ids"));
        foreach (bool skip in new[] { true, false })
        {
            var stream = new StreamingDecoder(tok, skip);
            var text = new StringBuilder();
            foreach (int id in ids)
            {
                string piece = stream.Push(id);
                Assert.DoesNotContain('\uFFFD', piece);
                text.Append(piece);
            }
            text.Append(stream.Flush());
            Assert.Equal(tok.Decode(ids, skip), text.ToString());
        }
    }

    [SharedTheory("tokenizers")]
    [InlineData("llama2-sentencepiece")]
    [InlineData("llama3")]
    public void Streaming_decoder_waits_for_all_bytes_of_an_emoji(string tokenizer)
    {
        var tok = Shared(tokenizer);
        int[] ids = tok.Encode("🙂👍🏽", addSpecialTokens: false);
        Assert.True(ids.Length > 3, "the emoji should be split over byte tokens");
        var stream = new StreamingDecoder(tok);
        var pieces = ids.Select(stream.Push).Where(p => p.Length > 0).ToList();
        Assert.Equal(["🙂", "👍", "🏽"], pieces);
        Assert.Equal(string.Empty, stream.Flush());
    }

    [SharedFact("tokenizers", "llama2-sentencepiece")]
    public void Streaming_decoder_keeps_sentencepiece_spaces()
    {
        var tok = Shared("llama2-sentencepiece");
        var stream = new StreamingDecoder(tok);
        var pieces = tok.Encode("Hello world again").Select(stream.Push).Where(p => p.Length > 0).ToList();
        Assert.Equal(["Hello", " world", " again"], pieces);
    }

    [SharedFact("tokenizers", "llama2-sentencepiece")]
    public void Streaming_decoder_flush_returns_an_incomplete_character()
    {
        var tok = Shared("llama2-sentencepiece");
        int[] ids = tok.Encode("🙂", addSpecialTokens: false); // ▁ <0xF0> <0x9F> <0x99> <0x82>
        var stream = new StreamingDecoder(tok);
        foreach (int id in ids[..^1])
            Assert.Equal(string.Empty, stream.Push(id));
        Assert.Equal("\uFFFD", stream.Flush());
        Assert.Equal(ids[..^1], stream.Ids);
        stream.Reset();
        Assert.Empty(stream.Ids);
    }

    [SharedFact("tokenizers")]
    public void Shared_tokenizers_report_their_special_tokens()
    {
        var llama3 = Shared("llama3");
        Assert.IsType<HfTokenizer>(llama3);
        Assert.Equal(128256, llama3.VocabSize);
        Assert.Equal(128000, llama3.BosId);
        Assert.Equal(128001, llama3.EosId);
        Assert.Equal([128001, 128009], llama3.StopIds);
        Assert.False(llama3.AddBosByDefault); // its post-processor adds nothing, and its config does not ask for BOS
        Assert.Equal("<|eot_id|>", llama3.IdToToken(128009));
        Assert.Equal("Hello", llama3.IdToToken(9906));
        Assert.Equal(9906, llama3.TokenToId("Hello"));
        Assert.Null(llama3.IdToToken(128256));

        var mistral = Shared("mistral-sp-bpe");
        Assert.IsType<HfTokenizer>(mistral);
        Assert.Equal((1, 2, true), (mistral.BosId, mistral.EosId, mistral.AddBosByDefault));
        Assert.Equal([2], mistral.StopIds);

        var llama2 = Shared("llama2-sentencepiece");
        Assert.IsType<SentencePieceTokenizer>(llama2);
        Assert.Equal((1, 2, true), (llama2.BosId, llama2.EosId, llama2.AddBosByDefault));
        Assert.Equal([2], llama2.StopIds);
        Assert.Equal("<s>", llama2.IdToToken(1));
        Assert.Equal("▁Hello", llama2.IdToToken(15043));
        Assert.Equal("<0xF0>", llama2.IdToToken(243));

        foreach (var name in new[] { "llama3", "mistral-sp-bpe", "llama2-sentencepiece" })
            Assert.Equal(Fixture.Value.GetProperty(name).GetProperty("vocab_size").GetInt32(), Shared(name).VocabSize);
    }

    [SharedFact("tokenizers")]
    public void Decode_ignores_ids_outside_the_vocabulary()
    {
        foreach (var name in new[] { "llama3", "llama2-sentencepiece" })
        {
            var tok = Shared(name);
            int[] ids = tok.Encode("Hello", addSpecialTokens: false);
            Assert.Equal("Hello", tok.Decode([-1, .. ids, tok.VocabSize, int.MaxValue]));
        }
    }

    [SharedFact("tokenizers")]
    public void Loader_accepts_folders_and_files()
    {
        using (var fromFolder = TokenizerLoader.Load(SharedAssets.Path("tokenizers", "llama2-sentencepiece")))
            Assert.IsType<SentencePieceTokenizer>(fromFolder);
        using (var fromFolder = TokenizerLoader.Load(SharedAssets.Path("tokenizers", "mistral-sp-bpe")))
        {
            Assert.IsType<HfTokenizer>(fromFolder);
            Assert.EndsWith("tokenizer.json", fromFolder.SourcePath);
        }
        using var fromFile = TokenizerLoader.Load(SharedAssets.Path("tokenizers", "llama2-sentencepiece", "tokenizer.model"));
        Assert.Equal([1, 15043], fromFile.Encode("Hello"));
    }

    [SharedFact("tokenizers")]
    public void CheckFitsModel_accepts_matching_and_larger_models_and_rejects_smaller_ones()
    {
        var tok = Shared("llama3");
        TokenizerLoader.CheckFitsModel(tok, 128256, tok.SourcePath);
        TokenizerLoader.CheckFitsModel(tok, 128264, tok.SourcePath);
        var e = Assert.Throws<RecurUserException>(() => TokenizerLoader.CheckFitsModel(tok, 128000, "my/tokenizer.json"));
        Assert.Contains("my/tokenizer.json", e.Message);
        Assert.Contains("128255", e.Message);
        Assert.Contains("128000", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => TokenizerLoader.CheckFitsModel(tok, 0, tok.SourcePath));
    }
}
