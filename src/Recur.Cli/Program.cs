using Recur.Cli;
using Recur.Diagnostics;

StartupTrace.Mark("main");
// Loading libtorch takes about a second; a verb that runs a model starts it on another core while the command line,
// the tokenizer and the config are read, and its first torch call waits for it. A generate that may run without
// libtorch (TorchFreeRoute) decides once its arguments are read, and starts it then if it needs it.
if (args.Length > 0 && Common.RunsModel(args[0]) && !TorchFreeRoute.MayApply(args)) Common.PreloadTorch();

var parsed = CliRoot.Create(args.Length > 0 ? args[0] : null).Parse(args);
StartupTrace.Mark("command line parsed");
// A malformed command line (unknown flag or verb, a value of the wrong type) gets one `error:` line naming the
// problem and where to look, as every other bad input does, instead of the parser's message followed by the whole
// help text. A bare `recur` and any request for help still print the help.
if (parsed.Errors.Count > 0 && args.Length > 0 && !args.Any(a => a is "-h" or "--help" or "-?" or "help"))
{
    var verb = parsed.CommandResult.Command.Parents.Any() ? $" {parsed.CommandResult.Command.Name}" : "";
    var name = Environment.GetEnvironmentVariable("RECUR_COMMAND") is { Length: > 0 } c ? Path.GetFileName(c) : "recur";
    var first = parsed.Errors.FirstOrDefault(e => !e.Message.StartsWith("Required command", StringComparison.Ordinal)) ?? parsed.Errors[0];
    Console.Error.WriteLine($"error: {first.Message.TrimEnd('.')} (see '{name}{verb} --help')");
    return 1;
}
return parsed.Invoke();
