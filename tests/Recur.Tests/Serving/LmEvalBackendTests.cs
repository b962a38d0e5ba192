using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Serving;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Serving;

/// <summary>
/// <c>recur serve</c> as lm-evaluation-harness's <c>local-completions</c> / <c>local-chat-completions</c> backend: the
/// request bodies are built the way lm_eval/models/openai_completions.py (<c>_create_payload</c>) and api_models.py
/// (<c>batch_loglikelihood_requests</c>, <c>model_call</c>) build them, and the responses are read the way its
/// <c>parse_logprobs</c> and <c>parse_generations</c> read them.
/// </summary>
public sealed class LmEvalBackendTests
{
    const long LmEvalSeed = 1234; // TemplateAPI's default seed, sent with every request

    static string Ids(IEnumerable<int> ids) => "[" + string.Join(',', ids) + "]";

    /// <summary>
    /// lm-eval's <c>parse_logprobs</c>: per choice (sorted by index) the sum of <c>token_logprobs[ctxlen:-1]</c>, and
    /// is_greedy = every one of those equals the largest value of its <c>top_logprobs</c> entry.
    /// </summary>
    static List<(double LogProb, bool IsGreedy)> ParseLogprobs(JsonNode body, IReadOnlyList<int> ctxlens)
    {
        var res = new List<(double, bool)>();
        var choices = body["choices"]!.AsArray().OrderBy(c => (int)c!["index"]!).ToList();
        foreach (var (choice, ctxlen) in choices.Zip(ctxlens))
        {
            Assert.True(ctxlen > 0);
            var lps = choice!["logprobs"]!["token_logprobs"]!.AsArray();
            var tops = choice["logprobs"]!["top_logprobs"]!.AsArray();
            double sum = 0;
            bool greedy = true;
            for (int i = ctxlen; i < lps.Count - 1; i++)
            {
                double lp = (double)lps[i]!;
                sum += lp;
                if (lp != tops[i]!.AsObject().Max(kv => (double)kv.Value!)) greedy = false;
            }
            res.Add((sum, greedy));
        }
        return res;
    }

    /// <summary>lm-eval's <c>_encode_pair</c> with add_bos_token=False (TemplateAPI's default): no special tokens.</summary>
    static (int[] Context, int[] Continuation) EncodePair(ITokenizer tok, string context, string continuation)
    {
        var whole = tok.Encode(context + continuation, addSpecialTokens: false);
        var ctx = tok.Encode(context, addSpecialTokens: false);
        return (ctx, whole[ctx.Length..]);
    }

    static readonly (string, string)[] Pairs =
    [
        ("the cat sat on the", " mat"),
        ("a dog ran to", " the big red mat and"),
        ("hello", " world"),
        ("small blue dog is", " big"),
    ];

    [Fact]
    public async Task Loglikelihood_requests_as_lm_eval_sends_them_echo_the_evaluation_scores_at_each_T()
    {
        string dir = ChatModels.Recurrent();
        using var s = ServerLimitTests.Serve(modelDir: dir);
        using var copy = (RecurrentModel)ModelLoader.Load(dir, ScalarType.Float32, CPU);
        var encoded = Pairs.Select(p => EncodePair(s.Tokenizer, p.Item1, p.Item2)).ToList();
        // batch_loglikelihood_requests: inputs are context + continuation ids, ctxlen the context's length.
        var inputs = encoded.Select(e => e.Context.Concat(e.Continuation).ToArray()).ToList();
        var ctxlens = encoded.Select(e => e.Context.Length).ToList();
        string prompt = "[" + string.Join(',', inputs.Select(Ids)) + "]";

        foreach (int? t in new int?[] { null, 2, 7 })
        {
            // _create_payload(generate=False), plus Recur's T field.
            string extra = t is int x ? $", \"recurrences\": {x}" : "";
            var (status, body) = await s.Post("/v1/completions",
                $$"""{"model": "tiny", "prompt": {{prompt}}, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": {{LmEvalSeed}}, "echo": true{{extra}}}""");
            Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
            int ran = t ?? copy.DefaultRecurrences;
            Assert.Equal(ran, (int)body!["recurrences"]!);
            var choices = body["choices"]!.AsArray();
            Assert.Equal(inputs.Count, choices.Count);
            for (int i = 0; i < inputs.Count; i++)
            {
                var c = choices[i]!;
                Assert.Equal(i, (int)c["index"]!);
                var lp = c["logprobs"]!;
                // The prompt's tokens then the one generated token; the first prompt token has no log-probability.
                int n = inputs[i].Length + 1;
                Assert.Equal(n, lp["tokens"]!.AsArray().Count);
                Assert.Equal(n, lp["token_logprobs"]!.AsArray().Count);
                Assert.Equal(n, lp["top_logprobs"]!.AsArray().Count);
                Assert.Equal(n, lp["text_offset"]!.AsArray().Count);
                Assert.Null(lp["token_logprobs"]![0]);
                Assert.Null(lp["top_logprobs"]![0]);
                var offsets = lp["text_offset"]!.AsArray().Select(o => (int)o!).ToList();
                Assert.Equal(offsets.Order(), offsets);
                // logprobs: 1 gives the top token plus the chosen one: one or two entries, all ≤ 0.
                foreach (var top in lp["top_logprobs"]!.AsArray().Skip(1))
                {
                    Assert.InRange(top!.AsObject().Count, 1, 2);
                    Assert.All(top.AsObject(), kv => Assert.True((double)kv.Value! <= 0));
                }
                Assert.StartsWith(s.Tokenizer.Decode(inputs[i]), (string?)c["text"]);
            }

            // The numbers lm-eval takes from the response are the evaluation's own log-likelihoods at that T and seed.
            var parsed = ParseLogprobs(body, ctxlens);
            for (int i = 0; i < encoded.Count; i++)
            {
                using var gen = new Generator((ulong)LmEvalSeed);
                var expected = Scoring.LogLikelihood(copy.At(Recurrence.Fixed(ran, gen)), [encoded[i]], batchSize: 1)[0];
                Assert.True(Math.Abs(expected.LogProb - parsed[i].LogProb) < 1e-4, $"T = {ran}, pair {i}: server {parsed[i].LogProb}, evaluation {expected.LogProb}");
                Assert.Equal(expected.IsGreedy, parsed[i].IsGreedy);
            }
            Assert.Equal((long)inputs.Sum(x => x.Length), (long)body["usage"]!["prompt_tokens"]!);
        }

        // The scores depend on T (the check above is not comparing constants).
        var at1 = ParseLogprobs((await s.Post("/v1/completions",
            $$"""{"prompt": {{prompt}}, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": {{LmEvalSeed}}, "echo": true, "recurrences": 1}""")).Body!, ctxlens);
        var at7 = ParseLogprobs((await s.Post("/v1/completions",
            $$"""{"prompt": {{prompt}}, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": {{LmEvalSeed}}, "echo": true, "recurrences": 7}""")).Body!, ctxlens);
        Assert.NotEqual(at1.Select(x => x.LogProb), at7.Select(x => x.LogProb));
    }

    [Fact]
    public async Task Max_tokens_zero_echoes_only_the_prompt_and_a_single_id_list_is_one_prompt()
    {
        string dir = ChatModels.Recurrent();
        using var s = ServerLimitTests.Serve(modelDir: dir);
        using var copy = (RecurrentModel)ModelLoader.Load(dir, ScalarType.Float32, CPU);
        var (ctx, cont) = EncodePair(s.Tokenizer, "the cat sat on the", " big red mat");
        int[] ids = [.. ctx, .. cont];
        var (status, body) = await s.Post("/v1/completions",
            $$"""{"prompt": {{Ids(ids)}}, "max_tokens": 0, "echo": true, "logprobs": 0, "seed": 9, "recurrences": 3}""");
        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
        var c = body!["choices"]!.AsArray().Single()!;
        Assert.Equal("length", (string?)c["finish_reason"]);
        Assert.Equal(0, (int)body["usage"]!["completion_tokens"]!);
        var lps = c["logprobs"]!["token_logprobs"]!.AsArray();
        Assert.Equal(ids.Length, lps.Count);
        // logprobs: 0 reports only the chosen token at each position.
        Assert.All(c["logprobs"]!["top_logprobs"]!.AsArray().Skip(1), top => Assert.Single(top!.AsObject()));
        double sum = lps.Skip(ctx.Length).Sum(x => (double)x!);
        using var gen = new Generator(9UL);
        var expected = Scoring.LogLikelihood(copy.At(Recurrence.Fixed(3, gen)), [(ctx, cont)], batchSize: 1)[0];
        Assert.True(Math.Abs(expected.LogProb - sum) < 1e-4, $"server {sum}, evaluation {expected.LogProb}");
    }

    [Fact]
    public async Task Generation_requests_as_lm_eval_sends_them_answer_each_prompt_as_a_request_of_its_own()
    {
        using var s = ServerLimitTests.Serve(modelDir: ChatModels.Recurrent());
        string[] contexts = ["the cat sat on", "a dog ran", "hello world is"];
        var stop = "[\"stop\", \"Question:\"]";
        async Task<string> Alone(string json)
        {
            var (st, b) = await s.Post("/v1/completions", json);
            Assert.True(st == HttpStatusCode.OK, b?.ToJsonString());
            return (string)b!["choices"]![0]!["text"]!;
        }

        // generate_until with tokenized requests: a list of token-id lists, max_tokens, temperature 0, stop, seed.
        var encoded = contexts.Select(c => s.Tokenizer.Encode(c, addSpecialTokens: false)).ToList();
        var (status, body) = await s.Post("/v1/completions",
            $$"""{"prompt": [{{string.Join(',', encoded.Select(Ids))}}], "model": "tiny", "max_tokens": 6, "temperature": 0, "stop": {{stop}}, "seed": {{LmEvalSeed}}, "recurrences": 2}""");
        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
        // parse_generations: tmp[choice.index] = choice.text.
        var texts = new string[contexts.Length];
        foreach (var c in body!["choices"]!.AsArray()) texts[(int)c!["index"]!] = (string)c["text"]!;
        for (int i = 0; i < contexts.Length; i++)
            Assert.Equal(await Alone($$"""{"prompt": {{Ids(encoded[i])}}, "max_tokens": 6, "temperature": 0, "stop": {{stop}}, "seed": {{LmEvalSeed}}, "recurrences": 2}"""), texts[i]);

        // tokenizer_backend=None: the prompts go as strings.
        var (st2, strings) = await s.Post("/v1/completions",
            $$"""{"prompt": ["{{string.Join("\", \"", contexts)}}"], "model": "tiny", "max_tokens": 6, "temperature": 0, "stop": {{stop}}, "seed": {{LmEvalSeed}}}""");
        Assert.Equal(HttpStatusCode.OK, st2);
        for (int i = 0; i < contexts.Length; i++)
            Assert.Equal(await Alone($$"""{"prompt": "{{contexts[i]}}", "max_tokens": 6, "temperature": 0, "stop": {{stop}}, "seed": {{LmEvalSeed}}}"""),
                (string)strings!["choices"]![i]!["text"]!);

        // local-chat-completions: one conversation per request, max_tokens, temperature 0, stop (at most 4), seed.
        var (st3, chat) = await s.Post("/v1/chat/completions",
            $$"""{"messages": [{"role": "user", "content": "the cat"}], "model": "tiny", "max_tokens": 5, "temperature": 0, "stop": ["Question:"], "seed": {{LmEvalSeed}}}""");
        Assert.True(st3 == HttpStatusCode.OK, chat?.ToJsonString());
        Assert.NotNull((string?)chat!["choices"]![0]!["message"]!["content"]);
    }

    [Fact]
    public async Task Generated_token_logprobs_are_the_models_and_greedy_tokens_are_the_top_choice()
    {
        using var s = ServerLimitTests.Serve(sleepMs: 0, modelDir: ChatModels.Plain());
        var prompt = s.Tokenizer.Encode("the cat sat on", addSpecialTokens: false);
        var (status, body) = await s.Post("/v1/completions", $$"""{"prompt": {{Ids(prompt)}}, "max_tokens": 4, "temperature": 0, "logprobs": 2}""");
        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
        var lp = body!["choices"]![0]!["logprobs"]!;
        var tokenLps = lp["token_logprobs"]!.AsArray().Select(x => (double)x!).ToList();
        Assert.InRange(tokenLps.Count, 1, 4);
        // Each generated token's log-probability is the model's for that token after the prompt and the tokens before
        // it: rebuild the ids from the greedy choices (the top entry) and score them.
        var generated = new List<int>();
        for (int i = 0; i < tokenLps.Count; i++)
        {
            var top = lp["top_logprobs"]![i]!.AsObject();
            Assert.InRange(top.Count, 1, 3);
            Assert.Equal(top.Max(kv => (double)kv.Value!), tokenLps[i], 6);
            var ids = prompt.Concat(generated).ToArray();
            // An async test has no dispose scope of its own (Support/TestTensorScope.cs): this one holds the input ids and
            // the indexed views while libtorch reads them; nothing in it awaits, so it opens and closes on one thread.
            using var scope = NewDisposeScope();
            var logits = s.Model.Forward(tensor(ids.Select(x => (long)x).ToArray(), [1, ids.Length]), lastOnly: true);
            var logp = logits[0, -1].log_softmax(-1);
            int best = (int)logp.argmax().item<long>();
            float modelLp = logp[best].item<float>();
            Assert.True(Math.Abs(modelLp - tokenLps[i]) < 1e-4, $"token {i}: server {tokenLps[i]}, model {modelLp}");
            generated.Add(best);
        }
        Assert.Equal(s.Tokenizer.Decode(generated), ((string)body["choices"]![0]!["text"]!).TrimStart());
    }

    [Fact]
    public async Task N_choices_are_numbered_per_prompt_and_each_reproduces_its_own_seed()
    {
        using var s = ServerLimitTests.Serve(modelDir: ChatModels.Recurrent());
        var (status, body) = await s.Post("/v1/completions", """{"prompt": ["the cat", "a dog"], "n": 3, "max_tokens": 5, "temperature": 1, "seed": 7}""");
        Assert.True(status == HttpStatusCode.OK, body?.ToJsonString());
        var choices = body!["choices"]!.AsArray();
        Assert.Equal(6, choices.Count);
        Assert.Equal([0, 1, 2, 3, 4, 5], choices.Select(c => (int)c!["index"]!));
        for (int i = 0; i < 6; i++)
        {
            string p = i < 3 ? "the cat" : "a dog";
            var (_, alone) = await s.Post("/v1/completions", $$"""{"prompt": "{{p}}", "max_tokens": 5, "temperature": 1, "seed": {{7 + i % 3}}}""");
            Assert.Equal((string)alone!["choices"]![0]!["text"]!, (string)choices[i]!["text"]!);
        }
        var (chatStatus, chat) = await s.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "n": 2, "max_tokens": 3, "temperature": 0, "logprobs": true, "top_logprobs": 2}""");
        Assert.True(chatStatus == HttpStatusCode.OK, chat?.ToJsonString());
        Assert.Equal(2, chat!["choices"]!.AsArray().Count);
        var content = chat["choices"]![0]!["logprobs"]!["content"]!.AsArray();
        Assert.Equal((int)chat["usage"]!["completion_tokens"]! / 2, content.Count);
        Assert.All(content, e => Assert.InRange(e!["top_logprobs"]!.AsArray().Count, 1, 2));
    }

    [Fact]
    public async Task Tokenizer_endpoints_answer_as_lm_evals_remote_tokenizer_reads_them()
    {
        using var s = ServerLimitTests.Serve();
        // check_remote_tokenizer_support: /tokenizer_info holds eos_token, /tokenize answers a list of tokens.
        using var infoRes = await s.Http.GetAsync("/tokenizer_info");
        Assert.Equal(HttpStatusCode.OK, infoRes.StatusCode);
        var info = JsonNode.Parse(await infoRes.Content.ReadAsStringAsync())!;
        Assert.Equal("</s>", (string?)info["eos_token"]);
        Assert.Equal("<s>", (string?)info["bos_token"]);
        async Task<int[]> Encode(string text)
        {
            var (st, b) = await s.Post("/tokenize", $$"""{"prompt": "{{text}}", "add_special_tokens": false}""");
            Assert.Equal(HttpStatusCode.OK, st);
            return [.. b!["tokens"]!.AsArray().Select(x => (int)x!)];
        }
        Assert.Equal(s.Tokenizer.Encode("the cat sat", addSpecialTokens: false), await Encode("the cat sat"));
        // RemoteTokenizer.eos_token_id / bos_token_id: the first id of encoding the token's text.
        Assert.Equal(s.Tokenizer.EosId, (await Encode((string)info["eos_token"]!))[0]);
        Assert.Equal(s.Tokenizer.BosId, (await Encode((string)info["bos_token"]!))[0]);
        var ids = await Encode("hello world");
        var (ds, db) = await s.Post("/detokenize", $$"""{"tokens": {{Ids(ids)}}}""");
        Assert.Equal(HttpStatusCode.OK, ds);
        Assert.Equal("hello world", (string?)db!["prompt"]);
        Assert.Equal(HttpStatusCode.BadRequest, (await s.Post("/detokenize", """{"tokens": [1, 999]}""")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await s.Post("/tokenize", """{"text": "a"}""")).Status);
    }

    [Fact]
    public async Task Many_prompts_stay_under_the_servers_limits()
    {
        using var s = ServerLimitTests.Serve(sleepMs: 30, new ServerOptions { RequestTimeout = TimeSpan.FromSeconds(2), ApiKey = "k", MaxBodyBytes = 64 << 10 });
        s.Http.DefaultRequestHeaders.Authorization = new("Bearer", "k");
        // More prompts than one request may hold (1,024 by default).
        string tooMany = "[" + string.Join(',', Enumerable.Repeat("\"a\"", 1025)) + "]";
        var (status, body) = await s.Post("/v1/completions", $$"""{"prompt": {{tooMany}}, "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("prompt", (string?)body!["error"]!["param"]);
        // 10,000 prompts (100 kB): the body cap (64 KiB here) answers first.
        string many = "[" + string.Join(',', Enumerable.Repeat("[7,7,7,7]", 10_000)) + "]";
        // On a connection of its own: the server closes a connection whose body it refused.
        using (var own = new HttpClient { BaseAddress = s.Http.BaseAddress, Timeout = TimeSpan.FromSeconds(60) })
        {
            own.DefaultRequestHeaders.Authorization = new("Bearer", "k");
            own.DefaultRequestHeaders.ConnectionClose = true;
            using var res = await own.PostAsync("/v1/completions", new StringContent($$"""{"prompt": {{many}}, "max_tokens": 0, "echo": true, "logprobs": 1}""", Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, res.StatusCode);
        }
        // Every prompt of a list is checked against the context, in 64 bits.
        string longOne = string.Join(' ', Enumerable.Repeat("cat", 300));
        var (st2, b2) = await s.Post("/v1/completions", $$"""{"prompt": ["the cat", "{{longOne}}"], "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.BadRequest, st2);
        Assert.Equal("context_length_exceeded", (string?)b2!["error"]!["code"]);
        var (st3, b3) = await s.Post("/v1/completions", """{"prompt": ["the cat", "a dog"], "max_tokens": 2147483647, "echo": true, "logprobs": 1}""");
        Assert.Equal(HttpStatusCode.BadRequest, st3);
        Assert.Equal("max_tokens", (string?)b3!["error"]!["param"]);
        // The deadline covers the whole list (20 prompts × 40 tokens at ≥ 30 ms per forward would take 24 s or more).
        string twenty = "[" + string.Join(',', Enumerable.Repeat("\"the cat\"", 20)) + "]";
        var (st4, b4) = await s.Post("/v1/completions", $$"""{"prompt": {{twenty}}, "max_tokens": 40, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.GatewayTimeout, st4);
        Assert.Equal("request_timeout", (string?)b4!["error"]!["code"]);
        // The API key applies to the new paths too.
        s.Http.DefaultRequestHeaders.Authorization = null;
        Assert.Equal(HttpStatusCode.Unauthorized, (await s.Post("/v1/completions", """{"prompt": ["a", "b"], "max_tokens": 0, "echo": true, "logprobs": 1}""")).Status);
        Assert.Equal(HttpStatusCode.Unauthorized, (await s.Post("/tokenize", """{"prompt": "a"}""")).Status);
    }
}
