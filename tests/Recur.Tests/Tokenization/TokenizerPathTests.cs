using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;

namespace Recur.Tests.Tokenization;

/// <summary>The one rule for finding a model's tokenizer, shared by the library facade and the CLI verbs.</summary>
public class TokenizerPathTests
{
    [Fact]
    public void A_given_tokenizer_wins_then_one_beside_the_model_then_none()
    {
        var withTok = TestModels.TempDir("recur-tokpath");
        File.WriteAllText(Path.Combine(withTok, "tokenizer.json"), "{}");
        var without = TestModels.TempDir("recur-tokpath");
        Assert.Equal("elsewhere/tokenizer.model", TokenizerLoader.PathFor(withTok, "elsewhere/tokenizer.model"));
        Assert.Equal(withTok, TokenizerLoader.PathFor(withTok, null));
        Assert.Null(TokenizerLoader.PathFor(without, null));
        Assert.Null(TokenizerLoader.PathFor(Path.Combine(without, "model.safetensors"), null));
    }
}
