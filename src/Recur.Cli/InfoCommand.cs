using System.CommandLine;
using Recur.Checkpoints;
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Cli;

static class InfoCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Model folder (HF or recurrent) or llama2.c .bin file", Required = true };
        var recurrences = new Option<int?>("--recurrences") { Description = "T for effective depth, parameters and KV cache of a recurrent model [default: mean_recurrence]" };
        var cmd = new Command("info", "Print a model's architecture, parameter counts per part, dtype and memory") { model, recurrences };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string path = Recur.Hub.HubCache.Resolve(parse.GetValue(model)!); // a folder, or a repo id in the HF cache
            var format = ModelLoader.Detect(path);
            using var m = ModelLoader.Load(path, ScalarType.Float32, CPU);
            if (m is RecurrentModel rm) PrintRecurrent(rm, path, parse.GetValue(recurrences) ?? rm.Config.MeanRecurrence);
            else PrintDecoder((DecoderModel)m, path, format);
            return 0;
        }));
        return cmd;
    }

    static int StoredBytes(string? dtype) => dtype is "bfloat16" or "float16" ? 2 : 4;

    static void PrintDecoder(DecoderModel m, string path, ModelFormat format)
    {
        var c = m.Config;
        string stored = c.TorchDType ?? "float32";
        long embed = m.model.embed_tokens.weight!.numel();
        long head = m.lm_head?.weight!.numel() ?? 0;
        long perLayer = c.ParamsPerLayer;
        long total = m.parameters().Sum(p => p.numel());
        Console.WriteLine($"model          {path} ({format})");
        Console.WriteLine($"architecture   {c.ModelType} ({(c.BlockType == BlockType.Llama ? "pre-norm" : "post-norm, q/k norm")}), {c.NumHiddenLayers} layers, hidden {c.HiddenSize}, MLP {c.IntermediateSize}");
        Attention(c);
        Console.WriteLine($"vocabulary     {c.VocabSize}; context {c.MaxPositionEmbeddings}; embeddings {(c.TieWordEmbeddings ? "tied" : "untied")}");
        Console.WriteLine($"parameters     {Common.Count(total)} = embeddings {Common.Count(embed)} + layers {Common.Count(perLayer * c.NumHiddenLayers)} ({Common.Count(perLayer)} per layer) + final norm {c.HiddenSize} + lm_head {Common.Count(head)}");
        Console.WriteLine($"dtype          stored {stored}; weights {Common.Human((double)total * StoredBytes(stored))} ({Common.Human(total * 4.0)} fp32, {Common.Human(total * 2.0)} bf16)");
        long kv = 2L * c.NumHiddenLayers * c.KvHeads * c.HeadDimension;
        Console.WriteLine($"kv cache       {c.NumHiddenLayers} slots, {kv} values per token ({Common.Human(kv * 4.0)} fp32, {Common.Human(kv * 2.0)} bf16)");
    }

    static void Attention(ModelConfig c) =>
        Console.WriteLine($"attention      {c.NumAttentionHeads} heads, {c.KvHeads} kv heads, head dim {c.HeadDimension}; RoPE θ={c.RopeTheta}{(c.RopeScaling is { } rs ? $", {rs.RopeType} scaling ×{rs.Factor}" : "")}");

    static void PrintRecurrent(RecurrentModel m, string path, int t)
    {
        if (t < 1) throw new RecurUserException($"--recurrences must be ≥ 1 (got {t})");
        var rc = m.Config;
        var c = rc.ToBlockConfig();
        var (p, r, cd) = rc.Shape;
        string stored = rc.TorchDType ?? "float32";
        long perLayer = c.ParamsPerLayer;
        long total = m.parameters().Sum(x => x.numel());
        long embed = m.transformer.wte.weight!.numel(), head = m.lm_head.weight!.numel(), adapter = m.transformer.adapter.weight!.numel();
        Console.WriteLine($"model          {path} (recurrent, Raven layout)");
        Console.WriteLine($"architecture   {rc.BlockType switch { BlockType.Llama => "llama (pre-norm)", BlockType.Olmo2 => "olmo2 (post-norm, q/k norm)", _ => "huginn sandwich (norms before and after attention and MLP)" }}{(rc.QkBias ? ", q/k bias" : "")} blocks, shape (p, r, c) = ({p}, {r}, {cd}), hidden {rc.NEmbd}, MLP {rc.IntermediateSize}");
        Attention(c);
        Console.WriteLine($"vocabulary     {rc.VocabSize} (embedding rows {rc.EmbeddingRows}); context {rc.MaxPositionEmbeddings}; lm_head {(rc.TieEmbeddings ? "tied to the embedding (held as a copy)" : "untied")}; embedding scale {rc.InitValues.EmbedScale:G6}");
        Console.WriteLine($"recurrence     mean_recurrence {rc.MeanRecurrence}, backprop depth {rc.MeanBackpropDepth}, s0 ~ TruncNormal(0, {rc.InitValues.Std:G6}², ±3σ)");
        Console.WriteLine($"parameters     {Common.Count(total)} stored = embeddings {Common.Count(embed)} + {p + r + cd} blocks {Common.Count(perLayer * (p + r + cd))} ({Common.Count(perLayer)} per block) + adapter {Common.Count(adapter)} + ln_f {rc.NEmbd} + lm_head {Common.Count(head)}");
        Console.WriteLine($"at T = {t,-7} effective depth {rc.EffectiveDepth(t)} layers (p + r·T + c); effective parameters {Common.Count(rc.EffectiveParameters(t))}");
        Console.WriteLine($"dtype          stored {stored}; weights {Common.Human((double)total * StoredBytes(stored))} ({Common.Human(total * 4.0)} fp32, {Common.Human(total * 2.0)} bf16)");
        long kv = 2L * rc.EffectiveDepth(t) * c.KvHeads * c.HeadDimension;
        Console.WriteLine($"kv cache       {rc.EffectiveDepth(t)} slots at T = {t}, {kv} values per token ({Common.Human(kv * 4.0)} fp32, {Common.Human(kv * 2.0)} bf16)");
    }
}
