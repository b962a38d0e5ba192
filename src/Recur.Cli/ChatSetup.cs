using System.CommandLine;
using Recur.Engine;
using Recur.Tokenization;

namespace Recur.Cli;

/// <summary>Loading shared by <c>chat</c> and <c>serve</c>: the library's <see cref="RecurModel.Load"/> with the verb's flags.</summary>
static class ChatSetup
{
    public static Option<string> TemplateOption() => new("--chat-template")
    {
        Description = "Prompt format: auto (recognise the tokenizer's chat_template), plain, llama3, llama3.1, chatml, llama2, mistral or huginn",
        DefaultValueFactory = _ => "auto",
    };

    /// <summary>
    /// The model (a folder, a llama2.c file, or a repository id in the Hugging Face cache), its tokenizer and chat
    /// template and the default T of the replies (<paramref name="recurrences"/>; null: the config's), resolved as the
    /// library resolves them; notes and errors name the verb's flags.
    /// </summary>
    public static RecurModel Load(string modelPath, string? tokenizerPath, string template, int? recurrences,
        string device, string? dtype, TextWriter log, string verb)
    {
        var model = RecurModel.Load(modelPath, new RecurLoadOptions
        {
            Device = device, DType = dtype ?? "fp32", Tokenizer = tokenizerPath, Recurrences = recurrences, ChatTemplate = template,
            Notice = s => log.WriteLine($"note: {Common.Note(s)}"),
        });
        try
        {
            _ = model.TokenizerFor(verb);
            _ = model.ChatTemplate; // a bad --chat-template fails now, before the verb starts
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Ids of the template's end-of-turn tokens that the tokenizer knows.</summary>
    public static int[] EndOfTurnIds(ChatTemplate template, ITokenizer tok) =>
        [.. template.EndOfTurnTokens.Select(tok.TokenToId).OfType<int>()];

    public static string ModelName(string path) =>
        Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path))) is { Length: > 0 } n ? n : "recur";
}
