using Recur.Cli;
using Recur.Diagnostics;

StartupTrace.Mark("main");
// Loading libtorch takes about a second; a verb that runs a model starts it on another core while the command line,
// the tokenizer and the config are read, and its first torch call waits for it.
if (args.Length > 0 && Common.RunsModel(args[0])) Common.PreloadTorch();

var parsed = CliRoot.Create().Parse(args);
StartupTrace.Mark("command line parsed");
return parsed.Invoke();
