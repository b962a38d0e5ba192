using System.CommandLine;
using Recur.Cli;

var root = new RootCommand("Recur: retrofit depth recurrence into pretrained language models, train, evaluate and generate.");
root.Options.Add(Common.Verbose);
root.Subcommands.Add(GenerateCommand.Create());
root.Subcommands.Add(InfoCommand.Create());
root.Subcommands.Add(InitCommand.Create());
root.Subcommands.Add(ConvertCommand.Create());
root.Subcommands.Add(RetrofitCommand.Create());
root.Subcommands.Add(TokenizeCommand.Create());
root.Subcommands.Add(DataCommand.Create());
root.Subcommands.Add(ChatCommand.Create());
root.Subcommands.Add(ServeCommand.Create());
root.Subcommands.Add(DownloadCommand.Create());
return root.Parse(args).Invoke();
