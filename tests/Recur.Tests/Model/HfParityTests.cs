using Recur.Checkpoints;
using Recur.Engine;
using Recur.Tests.Support;
using static TorchSharp.torch;
using Xunit;

namespace Recur.Tests.Model;

/// <summary>
/// Logits against the PyTorch reference (tests/reference/make_fixtures.py) for tiny random HF folders:
/// GQA, tied and untied heads, llama3 RoPE scaling, OLMo-2 blocks, bf16-stored weights.
/// </summary>
public class HfParityTests
{
    public static TheoryData<string> Models => new() { "llama-gqa", "llama-tied", "llama3-rope", "olmo2", "llama-bf16" };

    static (Recur.Model.DecoderModel Model, SafeTensorsFile Ref) Open(string name) =>
        (HfCheckpoint.Load(Path.Combine(TestModels.FixturesDir, "models", name), ScalarType.Float32, CPU),
         SafeTensorsFile.Open(Path.Combine(TestModels.FixturesDir, "parity", name + ".safetensors")));

    static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Theory, MemberData(nameof(Models))]
    public void Full_forward_matches_reference_logits(string name)
    {
        var (m, r) = Open(name);
        using (m) using (r) using (no_grad())
        {
            var logits = m.Forward(r.Read("input_ids"));
            Assert.True(MaxDiff(logits, r.Read("logits")) <= 1e-4, $"max diff {MaxDiff(logits, r.Read("logits"))}");
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void Cached_step_by_step_decoding_matches_reference_logits(string name)
    {
        var (m, r) = Open(name);
        using (m) using (r) using (no_grad())
        {
            var ids = r.Read("input_ids");
            using var cache = new KvCache(m.CacheSlots);
            var steps = cat(Enumerable.Range(0, (int)ids.shape[1]).Select(t => m.Forward(ids.narrow(1, t, 1), cache: cache)).ToList(), 1);
            Assert.True(MaxDiff(steps, r.Read("logits")) <= 1e-4, $"max diff {MaxDiff(steps, r.Read("logits"))}");
        }
    }

    [Theory, MemberData(nameof(Models))]
    public void Left_padded_batch_matches_reference_logits_at_real_tokens(string name)
    {
        var (m, r) = Open(name);
        using (m) using (r) using (no_grad())
        {
            var mask = r.Read("pad_attention_mask");
            var logits = m.Forward(r.Read("pad_input_ids"), keyPadding: mask);
            var real = mask.to(ScalarType.Bool).unsqueeze(-1);
            var diff = (logits - r.Read("pad_logits")).abs().masked_fill(real.logical_not(), 0).max().item<float>();
            Assert.True(diff <= 1e-4, $"max diff {diff}");
        }
    }
}
