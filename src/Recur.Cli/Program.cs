using Recur.Cli;

return CliRoot.Create().Parse(args).Invoke();
