using System.CommandLine;

namespace Recur.Cli;

/// <summary>The <c>recur</c> command tree (a function, so tests can walk every verb's options).</summary>
static class CliRoot
{
    public static Command Create()
    {
        // A plain Command named "recur" (rather than RootCommand, which takes the assembly's name) so help reads "recur …".
        var root = new Command("recur", "Recur: retrofit depth recurrence into pretrained language models, train, evaluate and generate.");
        root.Options.Add(new System.CommandLine.Help.HelpOption());
        root.Options.Add(new VersionOption());
        root.Options.Add(Common.Verbose);
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(InitCommand.Create());
        root.Subcommands.Add(ConvertCommand.Create());
        root.Subcommands.Add(RetrofitCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(DataCommand.Create());
        root.Subcommands.Add(FlopsCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(ChatCommand.Create());
        root.Subcommands.Add(ServeCommand.Create());
        root.Subcommands.Add(DownloadCommand.Create());
        return root;
    }
}
