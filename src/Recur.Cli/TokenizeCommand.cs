using System.CommandLine;
using Recur.Tokenization;

namespace Recur.Cli;

static class TokenizeCommand
{
    public static Command Create()
    {
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.json, tokenizer.model, or a folder holding one", Required = true };
        var text = new Option<string>("--text") { Description = "Text to encode", Required = true };
        var noSpecial = new Option<bool>("--no-special") { Description = "Do not add special tokens (BOS/EOS)" };
        var cmd = new Command("tokenize", "Print the token ids of a text on one line, space-separated") { tokenizer, text, noSpecial };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            using var tok = TokenizerLoader.Load(parse.GetValue(tokenizer)!);
            Console.WriteLine(string.Join(' ', tok.Encode(parse.GetValue(text)!, !parse.GetValue(noSpecial))));
            return 0;
        }));
        return cmd;
    }
}
