using System.CommandLine;
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Cli;

static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (HF) or llama2.c .bin file", Required = true };
        var prompt = new Option<string[]>("--prompt") { Description = "Prompt text (repeat for a batch)", AllowMultipleArgumentsPerToken = false };
        var promptIds = new Option<string[]>("--prompt-ids") { Description = "Prompt as space-separated token ids, for models without a tokenizer (repeat for a batch)" };
        var outputIds = new Option<bool>("--output-ids") { Description = "Print only the generated ids, space-separated, one line per prompt" };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate at most", DefaultValueFactory = _ => 128 };
        var temperature = new Option<double>("--temperature") { Description = "Sampling temperature; 0 is greedy", DefaultValueFactory = _ => 0.0 };
        var topK = new Option<int>("--top-k") { Description = "Keep the k most likely tokens (0: off)", DefaultValueFactory = _ => 0 };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass (1: off)", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long?>("--seed") { Description = "Random seed for sampling" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer file or folder (default: the model folder)" };
        var device = Common.DeviceOption();
        var dtype = Common.DTypeOption();
        var threads = Common.ThreadsOption();
        var cmd = new Command("generate", "Generate text (or token ids) from a prompt")
        {
            model, prompt, promptIds, outputIds, maxNew, temperature, topK, topP, seed, tokenizer, device, dtype, threads,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            Common.SetThreads(parse.GetValue(threads));
            var dev = Common.ParseDevice(parse.GetValue(device)!);
            var dt = Common.ParseDType(parse.GetValue(dtype));
            int max = parse.GetValue(maxNew);
            if (max < 1) throw new RecurUserException($"--max-new-tokens must be ≥ 1 (got {max})");
            var sampling = new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP), parse.GetValue(seed)).Validate();
            string path = parse.GetValue(model)!;
            var texts = parse.GetValue(prompt) ?? [];
            var idTexts = parse.GetValue(promptIds) ?? [];
            if (texts.Length == 0 && idTexts.Length == 0) throw new RecurUserException("give --prompt TEXT or --prompt-ids \"1 2 3\"");
            if (texts.Length > 0 && idTexts.Length > 0) throw new RecurUserException("give either --prompt or --prompt-ids, not both");

            using var m = ModelLoader.Load(path, dt, dev, notice: s => Console.Error.WriteLine($"note: {s}"));
            var stops = new List<int>(m.Config.EosTokenId ?? []);
            var prompts = idTexts.Select(ParseIds).ToList();
            if (texts.Length > 0) throw new RecurUserException("text prompts need a tokenizer; use --prompt-ids for now");

            var opts = new GenerationOptions(max, sampling, stops);
            var sw = Stopwatch.StartNew();
            var outputs = Generation.Generate(m, prompts, opts);
            sw.Stop();
            foreach (var o in outputs) Console.WriteLine(string.Join(' ', o));
            if (!parse.GetValue(outputIds))
                Console.Error.WriteLine($"[{outputs.Sum(o => o.Count)} tokens in {sw.Elapsed.TotalSeconds:0.00} s]");
            return 0;
        }));
        return cmd;
    }

    static int[] ParseIds(string text)
    {
        var parts = text.Split([' ', ',', '\t'], StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
            if (!int.TryParse(parts[i], out ids[i])) throw new RecurUserException($"--prompt-ids: '{parts[i]}' is not an integer token id");
        return ids;
    }
}
