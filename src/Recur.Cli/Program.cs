using Recur.Cli;
using Recur.Diagnostics;

StartupTrace.Mark("main");

return CliRoot.Create().Parse(args).Invoke();
