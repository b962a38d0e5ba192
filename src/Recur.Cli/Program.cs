using Recur.Cli;
using Recur.Diagnostics;

StartupTrace.Mark("main");
// Loading libtorch takes about a second; a verb that runs a model starts it on another core while the command line,
// the tokenizer and the config are read, and its first torch call waits for it. A generate that may run without
// libtorch (TorchFreeRoute) decides once its arguments are read, and starts it then if it needs it.
if (args.Length > 0 && Common.RunsModel(args[0]) && !TorchFreeRoute.MayApply(args)) Common.PreloadTorch();

var parsed = CliRoot.Create(args.Length > 0 ? args[0] : null).Parse(args);
StartupTrace.Mark("command line parsed");
return parsed.Invoke();
