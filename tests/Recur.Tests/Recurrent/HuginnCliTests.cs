using System.CommandLine;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Cli;
using Recur.Engine;
using Recur.Model;
using Recur.Serving;
using Recur.Tests.Evaluation;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Recurrent;

/// <summary>
/// <c>recur chat</c>, <c>eval</c> and <c>serve</c> on a tiny Huginn-shaped folder (tests/fixtures/models/huginn-tiny) with
/// a word-level tokenizer that carries Huginn's special tokens and a template of Huginn's chat layout.
/// </summary>
[Collection("Console")]
public sealed class HuginnCliTests
{
    static string Fixture => Path.Combine(TestModels.FixturesDir, "models", "huginn-tiny");

    static string HuginnTemplate()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestModels.FixturesDir, "chat", "huginn-template.json")));
        return doc.RootElement.GetProperty("templates").GetProperty("huginn").GetString()!;
    }

    /// <summary>A copy of the fixture with a 128-token word tokenizer: Huginn's five chat specials first, then words.</summary>
    static string Folder()
    {
        var dir = Path.Combine(TestModels.TempDir(), "huginn");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Fixture)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        string[] specials = ["<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>", "<|end_turn|>", "<unk>"];
        var vocab = new Dictionary<string, int>();
        foreach (var s in specials) vocab[s] = vocab.Count;
        foreach (var w in ChatModels.Vocab().Keys.Where(k => !k.StartsWith('<'))) vocab[w] = vocab.Count;
        while (vocab.Count < 128) vocab[$"x{vocab.Count}"] = vocab.Count;
        var added = specials.Select((s, i) => new Dictionary<string, object>
        {
            ["id"] = i, ["content"] = s, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        });
        var json = new Dictionary<string, object?>
        {
            ["version"] = "1.0", ["truncation"] = null, ["padding"] = null, ["added_tokens"] = added,
            ["normalizer"] = null, ["pre_tokenizer"] = new { type = "Whitespace" }, ["post_processor"] = null, ["decoder"] = null,
            ["model"] = new Dictionary<string, object> { ["type"] = "WordLevel", ["vocab"] = vocab.Take(128).ToDictionary(), ["unk_token"] = "<unk>" },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), JsonSerializer.Serialize(json));
        var config = new Dictionary<string, object?>
        {
            ["bos_token"] = "<|begin_text|>", ["eos_token"] = "<|end_text|>", ["add_bos_token"] = true, ["chat_template"] = HuginnTemplate(),
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(config));
        return dir;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public void Chat_answers_a_turn_in_huginns_layout_at_any_T(int t)
    {
        var dir = Folder();
        var outw = new StringWriter();
        var errw = new StringWriter();
        var root = new RootCommand();
        root.Subcommands.Add(ChatCommand.Create(new StringReader("the cat sat\n"), outw, errw));
        int code = root.Parse(["chat", "--model", dir, "--max-new-tokens", "5", "--seed", "3", "--recurrences", t.ToString()]).Invoke();
        Assert.True(code == 0, errw.ToString());
        Assert.Contains($"huginn template, T = {t}", errw.ToString());

        // The same turn run directly: Huginn's prompt text, encoded without added specials, stopping at its stop tokens.
        using var tok = TokenizerLoader.Load(dir);
        using var m = ModelLoader.Load(dir, ScalarType.Float32, CPU);
        var runner = new ModelRunner(m, tok) { DefaultRecurrences = t };
        var template = ChatTemplate.Detect(ChatTemplateFile.Read(tok.SourcePath), "<|begin_text|>", "<|end_text|>");
        string prompt = template.Render([ChatMessage.User("the cat sat")]);
        Assert.Equal("<|begin_text|><|begin_header|>user<|end_header|>\n\nthe cat sat<|end_turn|><|begin_header|>Huginn<|end_header|>\n\n", prompt);
        var ids = tok.Encode(prompt, template.AddSpecialTokens);
        Assert.Equal(new[] { 0, 2 }, ids.Take(2).ToArray());
        int[] stops = [.. template.EndOfTurnTokens.Select(tok.TokenToId).OfType<int>()];
        Assert.Equal([4, 1, 0], stops);
        var expected = runner.Run([new TextRequest(ids, 5, new SamplingOptions(Seed: 3), null, template.StopStrings, stops)])[0].Text.Trim();
        Assert.Equal(expected, outw.ToString().Split('\n')[0]);
    }

    [Fact]
    public void Eval_scores_perplexity_and_val_loss_at_two_T()
    {
        var dir = Folder();
        var outDir = Path.Combine(TestModels.TempDir("recur-eval-out"), "out");
        var val = Path.Combine(TestModels.TempDir("recur-eval-val"), "val.txt");
        File.WriteAllText(val, string.Join(" ", Enumerable.Repeat("the cat sat on the mat and ran to the dog.", 8)));
        var (code, _, err) = EvalCliTests.Eval("--model", dir, "--tasks", "lambada_openai,val_loss",
            "--data", $"{Recur.Tests.Tasks.TaskFixtures.Path("lambada.jsonl")},{val}", "--seq-len", "16", "--recurrences", "1,4", "--out", outDir);
        Assert.True(code == 0, err);
        var tasks = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, EvalCommand.ResultsFile)))!["tasks"]!;
        var ppl = new List<double>();
        foreach (var t in new[] { "1", "4" })
        {
            double p = (double)tasks["lambada_openai"]!["results"]![t]!["perplexity,none"]!;
            double loss = (double)tasks["val_loss"]!["results"]![t]!["loss,none"]!;
            Assert.True(double.IsFinite(p) && p > 1, $"T = {t}: perplexity {p}");
            Assert.True(double.IsFinite(loss) && loss > 0, $"T = {t}: loss {loss}");
            ppl.Add(p);
        }
        // The recurrence takes effect: a different T scores differently.
        Assert.NotEqual(ppl[0], ppl[1]);
    }

    [Fact]
    public void Eval_runs_a_generation_task_with_huginns_own_adaptive_rule()
    {
        var dir = Folder();
        var outDir = Path.Combine(TestModels.TempDir("recur-eval-out"), "out");
        var (code, _, err) = EvalCliTests.Eval("--model", dir, "--tasks", "gsm8k_cot_sean",
            "--data", Recur.Tests.Tasks.TaskFixtures.Path("gsm8k_test.jsonl"), "--fewshot-data", Recur.Tests.Tasks.TaskFixtures.Path("gsm8k_train.jsonl"),
            "--max-new-tokens", "4", "--batch-size", "1", "--recurrences", "2,adaptive:kl-official=0.1,max=4", "--out", outDir);
        Assert.True(code == 0, err);
        var gsm = JsonNode.Parse(File.ReadAllText(Path.Combine(outDir, EvalCommand.ResultsFile)))!["tasks"]!["gsm8k_cot_sean"]!;
        Assert.Equal(["2", "adaptive:kl-official=0.1,max=4"], gsm["results"]!.AsObject().Select(kv => kv.Key));
        var a = gsm["adaptive"]!["adaptive:kl-official=0.1,max=4"]!;
        long tokens = (long)a["generated_tokens"]!, iterations = (long)a["iterations"]!;
        Assert.True(tokens > 0);
        Assert.InRange(iterations, tokens, 4 * tokens);
    }

    [Fact]
    public async Task Serve_answers_a_chat_completion_at_two_T()
    {
        var dir = Folder();
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Recur.Cli.dll"));
        foreach (var a in new[] { "serve", "--model", dir, "--port", "0", "--recurrences", "2" }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var log = new StringBuilder();
        try
        {
            // The start-up line names the address: "serving 'huginn' at http://127.0.0.1:PORT/v1 (huginn chat template, …)".
            Uri? baseAddress = null;
            var deadline = DateTime.UtcNow.AddMinutes(3);
            while (baseAddress is null && DateTime.UtcNow < deadline)
            {
                var line = await p.StandardError.ReadLineAsync();
                if (line is null) break;
                log.AppendLine(line);
                int at = line.IndexOf(" at http://", StringComparison.Ordinal);
                if (line.StartsWith("serving ", StringComparison.Ordinal) && at > 0)
                {
                    Assert.Contains("huginn chat template", line);
                    Assert.Contains("T = 2", line);
                    baseAddress = new Uri(line[(at + 4)..line.IndexOf(' ', at + 4)].Replace("/v1", "/"));
                }
            }
            Assert.True(baseAddress is not null, $"the server did not start:\n{log}");
            _ = Task.Run(async () => { while (await p.StandardError.ReadLineAsync() is { } l) lock (log) log.AppendLine(l); });
            using var http = new HttpClient { BaseAddress = baseAddress, Timeout = TimeSpan.FromMinutes(2) };
            var replies = new List<string>();
            foreach (var t in new[] { 1, 4 })
            {
                var body = $$"""{"messages": [{"role": "user", "content": "the cat sat"}], "max_tokens": 4, "temperature": 0, "seed": 5, "recurrences": {{t}}}""";
                using var res = await http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
                var json = JsonNode.Parse(await res.Content.ReadAsStringAsync())!;
                Assert.True(res.StatusCode == HttpStatusCode.OK, json.ToJsonString());
                Assert.Equal(t, (int)json["recurrences"]!);
                Assert.InRange((int)json["usage"]!["completion_tokens"]!, 0, 4);
                replies.Add(json["choices"]![0]!["message"]!["content"]!.GetValue<string>());
            }

            // Each reply is the greedy continuation of Huginn's prompt at that T.
            using var tok = TokenizerLoader.Load(dir);
            using var m = ModelLoader.Load(dir, ScalarType.Float32, CPU);
            var template = ChatTemplate.Detect(ChatTemplateFile.Read(tok.SourcePath), "<|begin_text|>", "<|end_text|>");
            var ids = tok.Encode(template.Render([ChatMessage.User("the cat sat")]), template.AddSpecialTokens);
            int[] stops = [.. template.EndOfTurnTokens.Select(tok.TokenToId).OfType<int>()];
            for (int i = 0; i < 2; i++)
            {
                var runner = new ModelRunner(m, tok) { DefaultRecurrences = i == 0 ? 1 : 4 };
                var expected = runner.Run([new TextRequest(ids, 4, new SamplingOptions(Seed: 5), null, template.StopStrings, stops)])[0].Text;
                Assert.Equal(expected.Trim(), replies[i].Trim());
            }
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
    }
}
