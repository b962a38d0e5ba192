using System.CommandLine;
using Recur.Engine;
using Recur.Serving;

namespace Recur.Cli;

/// <summary>An OpenAI-compatible HTTP server for one model (see docs/serving.md).</summary>
static class ServeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (HF or recurrent)", Required = true };
        var host = new Option<string>("--host") { Description = "Interface to listen on: 127.0.0.1 (this machine only) or 0.0.0.0 (all interfaces: set --api-key)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0: any free port)", DefaultValueFactory = _ => 8000 };
        var recurrences = new Option<int?>("--recurrences") { Description = "Default test-time recurrence T for recurrent models; requests may set \"recurrences\" [default: the config's mean_recurrence]" };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most concurrent non-streaming greedy requests run as one batch", DefaultValueFactory = _ => 4 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file or folder [default: the model folder]" };
        var requestTimeout = new Option<double>("--request-timeout") { Description = "Seconds a completion request may take, queueing included, before it is cancelled with a 504 (0: no limit)", DefaultValueFactory = _ => 600 };
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1 requests [default: $RECUR_API_KEY; unset: no authentication]" };
        var name = new Option<string?>("--model-name") { Description = "Model id clients use [default: the model folder's name]" };
        var speculate = new Option<string?>("--speculate")
        {
            Description = "Self-speculative decoding for recurrent models: draft=T_d,k=K drafts K tokens at T_d recurrences and verifies them at T "
                + "in one pass, for greedy requests that run alone at T > T_d; same replies as plain decoding; see docs/speculative.md [default: off]",
        };
        var template = ChatSetup.TemplateOption();
        var device = Common.DeviceOption();
        var dtype = Common.DTypeOption();
        var threads = Common.ThreadsOption();
        var cmd = new Command("serve", "Serve a model over an OpenAI-compatible HTTP API (/v1/models, /v1/completions, /v1/chat/completions)")
        {
            model, host, port, recurrences, maxBatch, requestTimeout, apiKey, tokenizer, name, template, device, dtype, threads, speculate,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            Common.SetThreads(parse.GetValue(threads));
            string path = parse.GetValue(model)!;
            if (parse.GetValue(maxBatch) < 1) throw new RecurUserException($"--max-batch must be ≥ 1 (got {parse.GetValue(maxBatch)})");
            string? key = parse.GetValue(apiKey) ?? Environment.GetEnvironmentVariable("RECUR_API_KEY");
            if (key is not null && (key.Trim().Length == 0 || key.Any(char.IsControl) || key.Trim() != key))
                throw new RecurUserException("--api-key (or RECUR_API_KEY) must be a non-empty key without spaces or control characters");
            double timeoutSeconds = parse.GetValue(requestTimeout);
            if (!double.IsFinite(timeoutSeconds) || timeoutSeconds < 0 || timeoutSeconds > 7 * 24 * 3600)
                throw new RecurUserException($"--request-timeout must be between 0 and 604800 seconds (got {timeoutSeconds})");
            var spec = parse.GetValue(speculate) is { } specText ? SpeculativeOptions.Parse(specText, "--speculate") : null;
            var err = Console.Error;
            using var loaded = ChatSetup.Load(path, parse.GetValue(tokenizer), parse.GetValue(template)!, parse.GetValue(recurrences),
                parse.GetValue(device)!, parse.GetValue(dtype), err, "serve");
            var runner = new ModelRunner(loaded.Model, loaded.Tokenizer!, loaded.Recurrences) { Speculate = spec };
            // Refused at start-up, not per request, when the model cannot speculate at its default T.
            if (spec is not null) runner.EnsureCanSpeculate(spec);
            var options = new ServerOptions
            {
                Host = parse.GetValue(host)!,
                Port = parse.GetValue(port),
                ModelName = parse.GetValue(name) ?? ChatSetup.ModelName(path),
                MaxBatch = parse.GetValue(maxBatch),
                RequestTimeout = TimeSpan.FromSeconds(timeoutSeconds),
                ApiKey = key,
                Log = line => { lock (err) err.WriteLine($"{DateTime.Now:HH:mm:ss} {line}"); },
            };
            using var cancel = Common.CancelOnCtrlC();
            // Service managers stop with SIGTERM: shut down as gracefully as on Ctrl-C.
            using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, ctx =>
            {
                ctx.Cancel = true;
                cancel.Cancel();
            });
            using var server = new OpenAiServer(runner, loaded.ChatTemplate, options);
            server.Start();
            if (!options.LoopbackOnly && options.ApiKey is null)
            {
                err.WriteLine("warning: ********************************************************************************");
                err.WriteLine($"warning: listening on {options.Host} WITHOUT AN API KEY: anyone who can reach this machine can use the model.");
                err.WriteLine("warning: set --api-key KEY (or RECUR_API_KEY) to require 'Authorization: Bearer KEY'.");
                err.WriteLine("warning: ********************************************************************************");
            }
            err.WriteLine($"serving '{options.ModelName}' at {server.BaseAddress}v1 ({loaded.ChatTemplate.Name} chat template, context {runner.ContextLength}{(runner.IsRecurrent ? $", T = {runner.DefaultRecurrences}" : "")}{(spec is null ? "" : $", speculative {spec}")}); Ctrl-C stops");
            cancel.Token.WaitHandle.WaitOne();
            err.WriteLine("stopping: finishing requests in progress (Ctrl-C again to quit at once)");
            server.StopAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
            err.WriteLine("stopped");
            return 0;
        }));
        return cmd;
    }
}
