using System.CommandLine;
using Recur.Checkpoints;
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Cli;

static class InfoCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (HF) or llama2.c .bin file", Required = true };
        var cmd = new Command("info", "Print a model's architecture, parameter counts per part, dtype and memory") { model };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string path = parse.GetValue(model)!;
            var format = ModelLoader.Detect(path);
            using var m = ModelLoader.Load(path, ScalarType.Float32, CPU);
            Print(m, path, format);
            return 0;
        }));
        return cmd;
    }

    static void Print(DecoderModel m, string path, ModelFormat format)
    {
        var c = m.Config;
        string stored = c.TorchDType ?? "float32";
        long embed = m.model.embed_tokens.weight!.numel();
        long head = m.lm_head?.weight!.numel() ?? 0;
        long perLayer = c.ParamsPerLayer;
        long layers = perLayer * c.NumHiddenLayers;
        long total = m.parameters().Sum(p => p.numel());
        int bytesPer = stored is "bfloat16" or "float16" ? 2 : 4;
        Console.WriteLine($"model        {path} ({format})");
        Console.WriteLine($"architecture {c.ModelType} ({(c.BlockType == BlockType.Llama ? "pre-norm" : "post-norm, q/k norm")}), {c.NumHiddenLayers} layers, hidden {c.HiddenSize}, MLP {c.IntermediateSize}");
        Console.WriteLine($"attention    {c.NumAttentionHeads} heads, {c.KvHeads} kv heads, head dim {c.HeadDimension}; RoPE θ={c.RopeTheta}{(c.RopeScaling is { } rs ? $", {rs.RopeType} scaling ×{rs.Factor}" : "")}");
        Console.WriteLine($"vocabulary   {c.VocabSize}; context {c.MaxPositionEmbeddings}; embeddings {(c.TieWordEmbeddings ? "tied" : "untied")}");
        Console.WriteLine($"parameters   {Common.Count(total)} total = embeddings {Common.Count(embed)} + layers {Common.Count(layers)} ({Common.Count(perLayer)} per layer) + final norm {c.HiddenSize} + lm_head {Common.Count(head)}");
        Console.WriteLine($"dtype        stored {stored}; memory {Common.Human((double)total * bytesPer)} at that dtype ({Common.Human(total * 4.0)} fp32, {Common.Human(total * 2.0)} bf16)");
        long kvPerToken = 2L * c.NumHiddenLayers * c.KvHeads * c.HeadDimension;
        Console.WriteLine($"kv cache     {kvPerToken} values per token ({Common.Human(kvPerToken * 4.0)} fp32, {Common.Human(kvPerToken * 2.0)} bf16)");
    }
}
