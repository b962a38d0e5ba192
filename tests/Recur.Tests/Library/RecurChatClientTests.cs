using Microsoft.Extensions.AI;
using Recur.Engine;
using Recur.Serving;
using Recur.Tests.Support;
using Xunit;
using AI = Microsoft.Extensions.AI;

namespace Recur.Tests.Library;

/// <summary>The Microsoft.Extensions.AI chat client on a tiny recurrent model with a ChatML template.</summary>
public sealed class RecurChatClientTests
{
    static readonly AI.ChatMessage[] Conversation =
    [
        new(ChatRole.System, "the dog is small"),
        new(ChatRole.User, "hello the cat"),
        new(ChatRole.Assistant, "the cat sat on the mat"),
        new(ChatRole.User, "is the dog big"),
    ];

    /// <summary>The reply computed without the client: the template rendered by hand, ModelRunner at T.</summary>
    static TextResult Direct(RecurModel model, int t, long seed, int maxNew, IReadOnlyList<string>? stops = null)
    {
        var tok = model.Tokenizer!;
        var template = model.ChatTemplate;
        Assert.Equal(ChatFormat.ChatML, template.Format);
        string text = template.Render([Engine.ChatMessage.System("the dog is small"), Engine.ChatMessage.User("hello the cat"),
            Engine.ChatMessage.Assistant("the cat sat on the mat"), Engine.ChatMessage.User("is the dog big")]);
        var ids = tok.Encode(text, template.AddSpecialTokens);
        var runner = new ModelRunner(model.Model, tok);
        return runner.Run([new TextRequest(ids, maxNew, new SamplingOptions(Seed: seed), t, stops, [tok.TokenToId("<|im_end|>")!.Value])])[0];
    }

    [Fact]
    public async Task Response_streaming_usage_options_and_services()
    {
        string dir = ChatModels.Recurrent(ChatModels.ChatMLTemplate, seed: 17);
        using var model = RecurModel.Load(dir);
        using IChatClient client = new RecurChatClient(model);
        var options = new ChatOptions { MaxOutputTokens = 6, Seed = 5, AdditionalProperties = new() { ["recurrences"] = 2 } };

        var response = await client.GetResponseAsync(Conversation, options);
        var expected = Direct(model, 2, 5, 6);
        Assert.Equal(expected.Text, response.Text);
        Assert.Equal(ChatRole.Assistant, response.Messages.Single().Role);
        Assert.Equal(expected.PromptTokens, response.Usage!.InputTokenCount);
        Assert.Equal(expected.CompletionTokens, response.Usage.OutputTokenCount);
        Assert.Equal(expected.PromptTokens + expected.CompletionTokens, response.Usage.TotalTokenCount);
        Assert.Equal(expected.FinishReason == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop, response.FinishReason);
        Assert.Equal("recurrent", response.ModelId);

        // T reaches the model: T = 3 is the model's own reply at T = 3.
        var deeper = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 6, Seed = 5, AdditionalProperties = new() { ["recurrences"] = "3" } });
        Assert.Equal(Direct(model, 3, 5, 6).Text, deeper.Text);

        // Streaming: the same text in pieces, then one update with usage and the finish reason.
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync(Conversation, options)) updates.Add(u);
        Assert.Equal(response.Text, string.Concat(updates.Select(u => u.Text)));
        var usage = updates.SelectMany(u => u.Contents).OfType<UsageContent>().Single();
        Assert.Equal(expected.CompletionTokens, usage.Details.OutputTokenCount);
        Assert.Equal(response.FinishReason, updates[^1].FinishReason);
        var combined = updates.ToChatResponse();
        Assert.Equal(response.Text, combined.Text);

        // A stop sequence cuts the reply before it.
        if (expected.Text.Split(' ', StringSplitOptions.RemoveEmptyEntries) is { Length: >= 2 } words)
        {
            string stop = " " + words[1];
            var cut = await client.GetResponseAsync(Conversation, new ChatOptions { MaxOutputTokens = 6, Seed = 5, StopSequences = [stop], AdditionalProperties = new() { ["recurrences"] = 2 } });
            Assert.Equal(expected.Text[..expected.Text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
            Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);
        }

        Assert.Same(model, client.GetService<RecurModel>());
        Assert.Equal("recur", client.GetService<ChatClientMetadata>()!.ProviderName);
        Assert.Null(client.GetService<RecurModel>("key"));

        await Assert.ThrowsAsync<RecurUserException>(() => client.GetResponseAsync(Conversation, new ChatOptions { AdditionalProperties = new() { ["recurrences"] = 0 } }));
        await Assert.ThrowsAsync<RecurUserException>(() => client.GetResponseAsync(Conversation, new ChatOptions { Temperature = -1 }));
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync([new AI.ChatMessage(ChatRole.Tool, "42")]));
    }

    [Fact]
    public async Task Sampling_with_a_seed_is_reproducible_and_a_plain_model_refuses_recurrences()
    {
        string dir = ChatModels.Plain(ChatModels.ChatMLTemplate, seed: 19);
        using var model = RecurModel.Load(dir);
        using var client = new RecurChatClient(model);
        var o = new ChatOptions { MaxOutputTokens = 8, Temperature = 1.5f, TopK = 20, TopP = 0.9f, Seed = 123 };
        var a = await client.GetResponseAsync("hello the cat", o);
        var b = await client.GetResponseAsync("hello the cat", o);
        Assert.Equal(a.Text, b.Text);
        Assert.True(a.Usage!.OutputTokenCount >= 1);
        await Assert.ThrowsAsync<RecurUserException>(() => client.GetResponseAsync("hello", new ChatOptions { AdditionalProperties = new() { ["recurrences"] = 2 } }));
    }
}
