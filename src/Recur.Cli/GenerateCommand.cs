using System.CommandLine;
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Diagnostics;
using Recur.Engine;
using Recur.Model;
using Recur.Tokenization;
using static TorchSharp.torch;

namespace Recur.Cli;

static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (HF or recurrent) or llama2.c .bin file", Required = true };
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text (repeat for a batch)" };
        var promptIds = new Option<string[]>("--prompt-ids") { Description = "Prompt as space-separated token ids, for models without a tokenizer (repeat for a batch)" };
        var outputIds = new Option<bool>("--output-ids") { Description = "Print only the generated ids, space-separated, one line per prompt" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate at most", DefaultValueFactory = _ => 128 };
        var recurrences = new Option<string?>("--recurrences")
        {
            Description = "Test-time recurrence T for recurrent models, or adaptive depth per token "
                + "(experimental): adaptive:kl=5e-4,max=32, adaptive:latent=0.03,max=16, adaptive:entropy=1e-3,max=32, adaptive:argmax=5,max=32, "
                + "with optional warm=1 and cache=latest, or Huginn's own rule adaptive:kl-official=1e-3,max=32; see docs/adaptive.md [default: the config's mean_recurrence]",
        };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy", DefaultValueFactory = _ => 0.0 };
        var topK = new Option<int>("--top-k") { Description = "Keep the k most likely tokens (0: off)", DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass (1: off)", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long?>("--seed") { Description = "Random seed for sampling and for the recurrent initial state [default: random]" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file or folder [default: the model folder]" };
        var speculate = new Option<string?>("--speculate")
        {
            Description = "Self-speculative decoding for recurrent models (greedy, one prompt): draft=T_d,k=K drafts K tokens at T_d recurrences "
                + "and verifies them at T in one pass; same tokens as plain decoding; see docs/speculative.md [default: off]",
        };
        var device = Common.DeviceOption();
        var dtype = Common.DTypeOption();
        var threads = Common.ThreadsOption();
        var cmd = new Command("generate", "Generate text (or token ids) from a prompt, at any recurrence for recurrent models")
        {
            model, prompt, promptIds, outputIds, maxNew, recurrences, temperature, topK, topP, seed, tokenizer, speculate, device, dtype, threads,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            var dt = Common.ParseDType(parse.GetValue(dtype));
            int max = parse.GetValue(maxNew);
            if (max < 1) throw new RecurUserException($"--max-new-tokens must be ≥ 1 (got {max})");
            long seedValue = parse.GetValue(seed) ?? Random.Shared.NextInt64(1, long.MaxValue);
            var sampling = new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP), seedValue).Validate();
            string path = Recur.Hub.HubCache.Resolve(parse.GetValue(model)!); // a folder, or a repo id in the HF cache
            var spec = parse.GetValue(speculate) is { } specText ? SpeculativeOptions.Parse(specText, "--speculate") : null;
            var texts = parse.GetValue(prompt) ?? [];
            var idTexts = parse.GetValue(promptIds) ?? [];
            if (texts.Length == 0 && idTexts.Length == 0) throw new RecurUserException("give --prompt TEXT or --prompt-ids \"1 2 3\"");
            if (texts.Length > 0 && idTexts.Length > 0) throw new RecurUserException("give either --prompt or --prompt-ids, not both");
            var format = ModelLoader.Detect(path);
            StartupTrace.Mark("arguments read");
            // Greedy generation of one prompt from a plain folder stored in the compute dtype runs without libtorch
            // (MappedDecoder, docs/performance.md); everything else loads it, as Program.cs started to unless this might apply.
            using var mapped = TorchFreeRoute.Open(path, format, dt, parse.GetValue(device)!, sampling, spec, parse.GetValue(recurrences),
                texts.Length + idTexts.Length, out string route, notice: s => Console.Error.WriteLine($"note: {s}"));
            if (mapped is null)
            {
                TorchFreeRoute.LibtorchPathHandOff?.Invoke();
                Common.PreloadTorch();
            }
            StartupTrace.Mark($"arguments parsed; {route}");

            ITokenizer? tok = null;
            string? tokPath = TokenizerLoader.PathFor(path, parse.GetValue(tokenizer));
            if (texts.Length > 0 || (tokPath is not null && !parse.GetValue(outputIds)))
            {
                if (tokPath is null) throw new RecurUserException($"{path}: no tokenizer found; pass --tokenizer PATH, or use --prompt-ids with --output-ids");
                tok = TokenizerLoader.Load(tokPath);
            }
            using var _tok = tok;
            StartupTrace.Mark("tokenizer loaded");
            var output = new Output(tok, texts, idTexts, parse.GetValue(outputIds));

            if (mapped is not null)
            {
                MappedDecoder.SetThreads(Common.ThreadCount(parse.GetValue(threads)));
                if (tok is not null) TokenizerLoader.CheckFitsModel(tok, mapped.VocabSize, tokPath!);
                return output.Run(max, mapped.MaxPositions, mapped.EosTokenIds, sampling, null,
                    (prompts, opts, onToken, cancel) => [mapped.Generate(prompts[0], opts.MaxNewTokens, opts.StopIds, onToken is null ? null : new Action<int>(id => onToken(0, id)), cancel)],
                    () => "", () => StartupTrace.Mark($"generated; {TorchFreeRoute.LibtorchMapped()}"), (_, _) => TorchFreeRoute.ReleaseStartupGarbage());
            }

            // torch calls come after the tokenizer so that it loads while libtorch does (Common.PreloadTorch).
            Common.SetThreads(parse.GetValue(threads));
            var dev = Common.ParseDevice(parse.GetValue(device)!);
            StartupTrace.Mark("torch ready");
            using var m = ModelLoader.Load(path, dt, dev, notice: s => Console.Error.WriteLine($"note: {s}"));
            StartupTrace.Mark("model loaded");
            if (tok is not null) TokenizerLoader.CheckFitsModel(tok, m.VocabSize, tokPath!);
            var recurrence = parse.GetValue(recurrences) is { } recText ? ParseRecurrence(recText) : null;
            var adaptive = recurrence?.Adaptive;
            if (adaptive is not null && m is not RecurrentModel) throw new RecurUserException("--recurrences adaptive:... needs a recurrent model");
            if (adaptive is not null && spec is not null) throw new RecurUserException("--speculate runs at a fixed T: give --recurrences N, not an adaptive spec");
            var atT = Common.AtRecurrence(m, recurrence?.Fixed ?? adaptive?.MaxIterations, seedValue);
            var stats = new AdaptiveStats();
            var specStats = new SpeculativeStats();
            return output.Run(max, m.MaxPositions, m.EosTokenIds, sampling, spec,
                (prompts, opts, onToken, cancel) => spec is not null
                    ? Speculative.Generate(atT, prompts, opts, spec, specStats, onToken, cancel)
                    : adaptive is null
                    ? Generation.Generate(atT, prompts, opts, onToken, cancel)
                    : AdaptiveGeneration.Generate(atT, prompts, opts, adaptive, stats, onToken, cancel),
                () =>
                {
                    string depth = adaptive is not null
                        ? $", {adaptive} (experimental): {stats.MeanIterations:0.00} iterations per token, depths {Histogram(stats)}"
                        : atT is RecurrentModelAt v ? $", T = {v.Recurrence.Iterations}" : "";
                    if (spec is not null)
                        depth += $", speculative {spec}: {specStats.Accepted}/{specStats.Drafted} drafts accepted ({specStats.AcceptanceRate:P0}), {specStats.TokensPerCycle:0.00} tokens per cycle";
                    return depth;
                },
                () => StartupTrace.Mark("generated"),
                // Checked before the clock starts: a setting speculation cannot run with is a usage error, not a slow generation.
                spec is null ? null : new Action<List<int[]>, GenerationOptions>((prompts, opts) => Speculative.Stream(atT, prompts, opts, spec, specStats)));
        }));
        return cmd;
    }

    /// <summary>What both generation paths share: the prompts, the context cap, stop ids, streaming, the output and the closing line.</summary>
    sealed class Output(ITokenizer? tok, string[] texts, string[] idTexts, bool outputIds)
    {
        public delegate List<int>[] Generator(List<int[]> prompts, GenerationOptions options, Action<int, int>? onToken, CancellationToken cancel);

        public int Run(int max, int maxPositions, IEnumerable<int> eos, SamplingOptions sampling, SpeculativeOptions? spec, Generator generate,
            Func<string> depth, Action generated, Action<List<int[]>, GenerationOptions>? check = null)
        {
            var prompts = texts.Length > 0 ? texts.Select(t => tok!.Encode(t)).ToList() : idTexts.Select(ParseIds).ToList();
            // Never generate past the context: a huge --max-new-tokens is capped (prompt + limit added in 64 bits).
            int longest = prompts.Max(p => p.Length);
            if ((long)longest + max > maxPositions && longest < maxPositions)
            {
                Console.Error.WriteLine($"note: --max-new-tokens {max} capped at {maxPositions - longest}: the model's context is {maxPositions} positions and the prompt has {longest} tokens");
                max = maxPositions - longest;
            }
            var stops = new HashSet<int>(eos);
            if (tok is not null) stops.UnionWith(tok.StopIds);
            var opts = new GenerationOptions(max, sampling, stops) { Speculate = spec };
            check?.Invoke(prompts, opts);

            using var cancel = Common.CancelOnCtrlC();
            bool stream = prompts.Count == 1 && tok is not null && !outputIds;
            var decoder = stream ? new StreamingDecoder(tok!) : null;
            var sw = Stopwatch.StartNew();
            List<int>[] outputs;
            try
            {
                Action<int, int>? onToken = stream ? (_, id) => Console.Write(decoder!.Push(id)) : null;
                outputs = generate(prompts, opts, onToken, cancel.Token);
            }
            catch (OperationCanceledException)
            {
                if (decoder is not null) Console.WriteLine(decoder.Flush());
                Console.Error.WriteLine("interrupted");
                return 130;
            }
            sw.Stop();
            generated();
            if (stream) Console.WriteLine(decoder!.Flush());
            else if (outputIds || tok is null) foreach (var o in outputs) Console.WriteLine(string.Join(' ', o));
            else
                for (int i = 0; i < outputs.Length; i++)
                {
                    if (outputs.Length > 1) Console.WriteLine($"--- [{i}]");
                    Console.WriteLine(tok.Decode(outputs[i]));
                }
            if (!outputIds)
            {
                int n = outputs.Sum(o => o.Count);
                Console.Error.WriteLine($"[{n} tokens in {sw.Elapsed.TotalSeconds:0.00} s, {n / Math.Max(sw.Elapsed.TotalSeconds, 1e-9):0.0} tok/s{depth()}]");
            }
            return 0;
        }
    }

    /// <summary>One integer T or one adaptive spec.</summary>
    static RecurrenceSetting ParseRecurrence(string text)
    {
        var list = RecurrenceSetting.ParseList(text, "--recurrences");
        if (list.Count != 1) throw new RecurUserException($"--recurrences: give one T or one adaptive spec for generate (got '{text}')");
        return list[0];
    }

    static string Histogram(AdaptiveStats s) =>
        string.Join(' ', s.Histogram.Select((n, d) => (n, d)).Where(x => x.n > 0).Select(x => $"{x.d}:{x.n}"));

    internal static int[] ParseIds(string text)
    {
        var parts = text.Split([' ', ',', '\t'], StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new RecurUserException("--prompt-ids is empty: give at least one token id");
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i])) throw new RecurUserException($"--prompt-ids: '{parts[i]}' is not an integer token id");
        return ids;
    }
}
