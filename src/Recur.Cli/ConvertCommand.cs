using System.CommandLine;
using Recur.Checkpoints;
using static TorchSharp.torch;

namespace Recur.Cli;

static class ConvertCommand
{
    public static Command Create()
    {
        var from = new Option<string>("--from") { Description = "Source format (llama2c)", Required = true };
        from.AcceptOnlyFromAmong("llama2c");
        var input = new Argument<string>("FILE") { Description = "The file to convert" };
        var output = new Option<string>("--out") { Description = "Output model folder (Hugging Face layout)", Required = true };
        var dtype = Common.SaveDTypeOption();
        var force = new Option<bool>("--force") { Description = "Replace an existing output folder" };
        var cmd = new Command("convert", "Convert a llama2.c checkpoint to a Hugging Face model folder") { input, from, output, dtype, force };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string src = parse.GetValue(input)!, dst = parse.GetValue(output)!;
            var storeType = HfCheckpoint.ParseDType(parse.GetValue(dtype)!);
            if (Directory.Exists(dst) && !parse.GetValue(force)) throw new RecurUserException($"{dst}: output folder already exists (use --force to overwrite)");
            using var model = Llama2c.Load(src, ScalarType.Float32, CPU);
            HfCheckpoint.Save(model, dst, storeType, force: parse.GetValue(force));
            long n = model.parameters().Sum(p => p.numel());
            Console.WriteLine($"wrote {dst} ({model.Config.NumHiddenLayers} layers, {Common.Count(n)} parameters, {HfCheckpoint.DTypeName(storeType)})");
            return 0;
        }));
        return cmd;
    }
}
