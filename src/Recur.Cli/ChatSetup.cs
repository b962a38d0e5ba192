using System.CommandLine;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;

namespace Recur.Cli;

/// <summary>Loading shared by <c>chat</c> and <c>serve</c>: model, its tokenizer and its chat template.</summary>
static class ChatSetup
{
    public static Option<string> TemplateOption() => new("--chat-template")
    {
        Description = "Prompt format: auto (recognise the tokenizer's chat_template), plain, llama3, llama3.1, chatml, llama2, mistral or huginn",
        DefaultValueFactory = _ => "auto",
    };

    /// <param name="Recurrences">--recurrences: the default T of the replies (null: the model's own default).</param>
    public sealed record Loaded(ICausalLM Model, ITokenizer Tokenizer, ChatTemplate Template, int? Recurrences = null) : IDisposable
    {
        public void Dispose()
        {
            Model.Dispose();
            Tokenizer.Dispose();
        }
    }

    public static Loaded Load(string modelPath, string? tokenizerPath, string template, int? recurrences,
        TorchSharp.torch.Device device, TorchSharp.torch.ScalarType dtype, TextWriter log, string verb)
    {
        modelPath = Recur.Hub.HubCache.Resolve(modelPath); // a folder, or a repo id in the HF cache
        ModelLoader.Detect(modelPath);
        string tokPath = TokenizerLoader.PathFor(modelPath, tokenizerPath)
            ?? throw new RecurUserException($"{modelPath}: no tokenizer.json or tokenizer.model in the model folder; {verb} needs text, so pass --tokenizer PATH");
        var tok = TokenizerLoader.Load(tokPath);
        ICausalLM? model = null;
        try
        {
            model = ModelLoader.Load(modelPath, dtype, device, notice: s => log.WriteLine($"note: {s}"));
            TokenizerLoader.CheckFitsModel(tok, model.VocabSize, tokPath);
            if (model is RecurrentModel)
            {
                if (recurrences is { } t) Common.CheckRecurrences(t);
            }
            else if (recurrences is not null)
                log.WriteLine("note: --recurrences ignored: this is not a recurrent model");
            string? bos = tok.BosId is int b ? tok.IdToToken(b) : null;
            string? eos = tok.EosId is int e ? tok.IdToToken(e) : null;
            var chat = template.Equals("auto", StringComparison.OrdinalIgnoreCase)
                ? ChatTemplate.Detect(ChatTemplateFile.Read(tok.SourcePath), bos, eos, notice: s => log.WriteLine($"note: {s}"))
                : ChatTemplate.Named(template, bos, eos);
            return new Loaded(model, tok, chat, model is RecurrentModel ? recurrences : null);
        }
        catch
        {
            model?.Dispose();
            tok.Dispose();
            throw;
        }
    }

    /// <summary>Ids of the template's end-of-turn tokens that the tokenizer knows.</summary>
    public static int[] EndOfTurnIds(ChatTemplate template, ITokenizer tok) =>
        [.. template.EndOfTurnTokens.Select(tok.TokenToId).OfType<int>()];

    public static string ModelName(string path) =>
        Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path))) is { Length: > 0 } n ? n : "recur";
}
