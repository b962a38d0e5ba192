using System.CommandLine;

namespace Recur.Cli;

/// <summary>The <c>recur</c> command tree (a function, so tests can walk every verb's options).</summary>
static class CliRoot
{
    /// <summary>
    /// The whole tree, or with <paramref name="verb"/> (the first argument of a command line) naming a verb, the root with
    /// only that verb: a start builds the one command it runs (help and errors within a verb read the same).
    /// </summary>
    public static Command Create(string? verb = null)
    {
        if (verb is not null && Verbs.FirstOrDefault(v => v.Name == verb) is { Create: not null } one) return Root(one.Create());
        var root = Root();
        foreach (var (_, create) in Verbs) root.Subcommands.Add(create());
        return root;
    }

    /// <summary>The root command with the given verbs under it (the native generate front builds only `generate`).</summary>
    public static Command Root(params Command[] verbs)
    {
        // A plain Command named "recur" (rather than RootCommand, which takes the assembly's name) so help reads "recur …".
        var root = new Command("recur", "Recur: retrofit depth recurrence into pretrained language models, train, evaluate and generate.");
        root.Options.Add(new System.CommandLine.Help.HelpOption());
        root.Options.Add(new VersionOption());
        root.Options.Add(Common.Verbose);
        foreach (var verb in verbs) root.Subcommands.Add(verb);
        return root;
    }

    static readonly (string Name, Func<Command> Create)[] Verbs =
    [
        ("generate", GenerateCommand.Create), ("info", InfoCommand.Create), ("init", InitCommand.Create), ("convert", ConvertCommand.Create),
        ("retrofit", RetrofitCommand.Create), ("tokenize", TokenizeCommand.Create), ("data", DataCommand.Create), ("flops", FlopsCommand.Create),
        ("train", TrainCommand.Create), ("demo", DemoCommand.Create), ("eval", EvalCommand.Create), ("chat", () => ChatCommand.Create()),
        ("serve", ServeCommand.Create), ("download", DownloadCommand.Create),
    ];
}
