using System.CommandLine;
using System.Diagnostics;
using System.Text;
using Recur.Engine;
using Recur.Model;
using Recur.Serving;

namespace Recur.Cli;

/// <summary>
/// Interactive chat in the terminal. Lines read from standard input (or from <c>input</c> in tests) are user
/// messages or slash commands (<see cref="ChatInput"/>); replies stream to standard output; notes go to
/// standard error, so <c>recur chat … &lt; questions.txt &gt; answers.txt</c> keeps only the replies.
/// </summary>
static class ChatCommand
{
    public static Command Create(TextReader? input = null, TextWriter? output = null, TextWriter? error = null)
    {
        var model = new Option<string>("--model") { Description = "Model folder (HF or recurrent)", Required = true };
        var recurrences = new Option<int?>("--recurrences") { Description = "Test-time recurrence T for recurrent models; /recurrences N changes it [default: the config's mean_recurrence]" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file or folder [default: the model folder]" };
        var system = new Option<string?>("--system") { Description = "System message that opens the conversation" };
        var maxNew = new Option<int?>("--max-new-tokens") { Description = "Longest reply, in tokens " + Common.MaxNewTokensDefault(512) };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy", DefaultValueFactory = _ => 0.0 };
        var topK = new Option<int>("--top-k") { Description = "Keep the k most likely tokens (0: off)", DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass (1: off)", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long?>("--seed") { Description = "Random seed for sampling and the recurrent initial state (each reply uses seed + turn) [default: random]" };
        var speculate = new Option<string?>("--speculate")
        {
            Description = "Self-speculative decoding for recurrent models (greedy): draft=T_d,k=K drafts K tokens at T_d recurrences "
                + "and verifies them at T in one pass; same replies as plain decoding; see docs/speculative.md [default: off]",
        };
        var template = ChatSetup.TemplateOption();
        var device = Common.DeviceOption();
        var dtype = Common.DTypeOption();
        var threads = Common.ThreadsOption();
        var cmd = new Command("chat", "Chat with a model in the terminal (history, chat template, /recurrences N, /reset, /exit)")
        {
            model, recurrences, tokenizer, system, maxNew, temperature, topK, topP, seed, speculate, template, device, dtype, threads,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            var outw = output ?? Console.Out;
            var errw = error ?? Console.Error;
            Common.SetThreads(parse.GetValue(threads));
            if (parse.GetValue(maxNew) is < 1) throw new RecurUserException($"--max-new-tokens must be ≥ 1 (got {parse.GetValue(maxNew)})");
            long baseSeed = parse.GetValue(seed) ?? Random.Shared.NextInt64(1, long.MaxValue / 2);
            var sampling = new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP)).Validate();
            string path = parse.GetValue(model)!;
            using var loaded = ChatSetup.Load(path, parse.GetValue(tokenizer), parse.GetValue(template)!, parse.GetValue(recurrences),
                parse.GetValue(device)!, parse.GetValue(dtype), errw, "chat");
            var runner = new ModelRunner(loaded.Model, loaded.Tokenizer!, loaded.Recurrences);
            int max = Common.MaxNewTokens(parse.GetValue(maxNew), 512, runner.ContextLength, errw);
            int budget = runner.ContextLength - max;
            if (budget < 1)
                throw new RecurUserException($"--max-new-tokens {max} leaves no room for the conversation in the model's context of {runner.ContextLength} tokens");
            var session = new ChatSession(loaded.ChatTemplate, parse.GetValue(system));
            var spec = parse.GetValue(speculate) is { } specText ? SpeculativeOptions.Parse(specText, "--speculate") : null;
            if (spec is not null)
            {
                // Refused at start, not on the first turn: a greedy reply of one conversation at a T above the draft's.
                if (!sampling.Greedy) throw new RecurUserException("--speculate: speculative decoding is greedy only: set --temperature 0 or leave out --speculate");
                runner.EnsureCanSpeculate(spec);
            }
            var loop = new ChatLoop(runner, session, max, sampling, baseSeed, input ?? Console.In, outw, errw,
                interactive: input is null && !Console.IsInputRedirected) { Speculate = spec };
            errw.WriteLine($"chat with {ChatSetup.ModelName(path)} ({loaded.ChatTemplate.Name} template{(runner.IsRecurrent ? $", T = {runner.DefaultRecurrences}" : "")}); /help lists commands, /exit quits");
            return loop.Run(hookCtrlC: input is null);
        }));
        return cmd;
    }

    /// <summary>The read–reply loop, with Ctrl-C handling: stop the reply while it streams, quit on a second press at the prompt.</summary>
    sealed class ChatLoop(ModelRunner runner, ChatSession session, int maxNew, SamplingOptions sampling, long baseSeed,
        TextReader input, TextWriter output, TextWriter error, bool interactive)
    {
        readonly object _gate = new();

        /// <summary>Speculative decoding of every reply (--speculate); null: plain decoding.</summary>
        public SpeculativeOptions? Speculate { get; init; }

        readonly int[] _endOfTurn = ChatSetup.EndOfTurnIds(session.Template, runner.Tokenizer);
        CancellationTokenSource? _reply;
        bool _ctrlCAtPrompt;
        int _turn;

        public int Run(bool hookCtrlC)
        {
            ConsoleCancelEventHandler handler = OnCtrlC;
            if (hookCtrlC) Console.CancelKeyPress += handler;
            try
            {
                while (true)
                {
                    if (interactive) { output.Write(">>> "); output.Flush(); }
                    string? line = input.ReadLine();
                    lock (_gate) _ctrlCAtPrompt = false;
                    switch (ChatInput.Parse(line))
                    {
                        case ChatInput.Exit:
                            if (line is null && interactive) output.WriteLine();
                            return 0;
                        case ChatInput.Empty:
                            break;
                        case ChatInput.Help:
                            error.WriteLine(ChatInput.HelpText);
                            break;
                        case ChatInput.Reset:
                            session.Reset();
                            error.WriteLine("(conversation cleared)");
                            break;
                        case ChatInput.Recurrences(var t):
                            if (!runner.IsRecurrent) error.WriteLine("this model is not recurrent: it has no test-time recurrence to set");
                            else
                            {
                                if (t is > Checkpoints.WeightCheck.MaxRecurrence) error.WriteLine($"error: /recurrences must be at most {Checkpoints.WeightCheck.MaxRecurrence}");
                                else if (t is int n) runner.DefaultRecurrences = n;
                                error.WriteLine($"T = {runner.DefaultRecurrences}");
                            }
                            break;
                        case ChatInput.Invalid(var message):
                            error.WriteLine($"error: {message}");
                            break;
                        case ChatInput.Message(var text):
                            Reply(text);
                            break;
                    }
                }
            }
            finally
            {
                if (hookCtrlC) Console.CancelKeyPress -= handler;
            }
        }

        void Reply(string text)
        {
            session.AddUser(text);
            int[] ids;
            try
            {
                (ids, int dropped) = session.BuildPrompt(runner.Tokenizer.Encode, runner.ContextLength - maxNew);
                if (dropped > 0) error.WriteLine($"note: dropped the {dropped} oldest turn(s) to fit the model's context of {runner.ContextLength} tokens");
            }
            catch (RecurUserException e)
            {
                session.DropPendingUser();
                error.WriteLine($"error: {Common.Describe(e)}");
                return;
            }

            var reply = new StringBuilder();
            var cts = new CancellationTokenSource();
            lock (_gate) _reply = cts;
            var sw = Stopwatch.StartNew();
            bool stopped = false;
            TextResult? result = null;
            try
            {
                var request = new TextRequest(ids, maxNew, sampling with { Seed = baseSeed + _turn++ }, null, session.Template.StopStrings, _endOfTurn, TextLayout.ChatReply,
                    Speculate: Speculate);
                // The plain format's reply starts after "Assistant:"; drop the space the model writes first.
                result = runner.Run([request], (_, piece) =>
                {
                    if (reply.Length == 0) piece = piece.TrimStart();
                    if (piece.Length == 0) return;
                    reply.Append(piece);
                    output.Write(piece);
                    output.Flush();
                }, cts.Token)[0];
            }
            catch (OperationCanceledException) { stopped = true; }
            finally
            {
                lock (_gate) _reply = null;
                cts.Dispose();
            }
            output.WriteLine();
            // A stopped reply stays in the history as far as it got: the user saw it.
            session.AddAssistant(reply.ToString().Trim());
            if (stopped) error.WriteLine("[reply stopped]");
            else if (interactive && result is not null)
                error.WriteLine($"[{result.CompletionTokens} tokens, {result.CompletionTokens / Math.Max(sw.Elapsed.TotalSeconds, 1e-9):0.0} tok/s{(runner.IsRecurrent ? $", T = {runner.DefaultRecurrences}" : "")}{(result.FinishReason == "length" ? ", cut at --max-new-tokens" : "")}]");
        }

        void OnCtrlC(object? sender, ConsoleCancelEventArgs e)
        {
            lock (_gate)
            {
                if (_reply is { IsCancellationRequested: false })
                {
                    e.Cancel = true;
                    _reply.Cancel();
                    return;
                }
                if (_ctrlCAtPrompt) return; // second press at the prompt: let the process end
                _ctrlCAtPrompt = true;
                e.Cancel = true;
            }
            error.WriteLine();
            error.WriteLine("(Ctrl-C again to quit, or type /exit)");
            if (interactive) { output.Write(">>> "); output.Flush(); }
        }
    }
}
