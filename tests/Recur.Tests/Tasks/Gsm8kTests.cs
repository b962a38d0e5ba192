using System.Text.Json.Nodes;
using Recur.Tasks;
using Recur.Tests.Support;
using Xunit;

namespace Recur.Tests.Tasks;

public class Gsm8kTests
{
    const string TrainQ = "Tom has 3 boxes with 4 pens in each box. He gives away 5 pens. How many pens does he have left?";
    const string TrainTarget = "Tom has 3 * 4 = 12 pens. After giving away 5 he has 12 - 5 = 7 pens. The answer is 7.";
    const string TestQ = "Sam buys 2 apples and 3 pears. How many fruits does he buy?";

    static Gsm8kTask Task(Gsm8kVariant variant, int shots = 1) =>
        Gsm8kTask.Create(variant, new GenerationTaskOptions(shots), TaskFixtures.Path("gsm8k_train.jsonl"));

    [Fact]
    public void One_shot_lm_eval_prompt_is_exact()
    {
        var prompt = Task(Gsm8kVariant.Cot).BuildPrompt(TestQ);
        Assert.Equal("Q: " + TrainQ + "\nA: " + TrainTarget + "\n\nQ: " + TestQ + "\nA:", prompt);
    }

    [Fact]
    public void One_shot_sean_prompt_carries_the_suffix_on_exemplar_and_question()
    {
        var prompt = Task(Gsm8kVariant.CotSean).BuildPrompt(TestQ);
        Assert.Equal("Q: " + TrainQ + "\nA: Let's think step by step. " + TrainTarget + "\n\nQ: " + TestQ + "\nA: Let's think step by step.", prompt);
    }

    [Fact]
    public void Zero_shot_prompt_is_the_question_turn_only()
    {
        var t = new Gsm8kTask(Gsm8kVariant.Cot, new GenerationTaskOptions(NumFewshot: 0));
        Assert.Equal("Q: " + TestQ + "\nA:", t.BuildPrompt(TestQ));
    }

    [Fact]
    public void Exemplars_drop_calculator_annotations_and_blank_lines()
    {
        var ex = Gsm8kTask.LoadExemplars(TaskFixtures.Path("gsm8k_train.jsonl"), 3, Gsm8kVariant.Cot);
        Assert.Equal(3, ex.Count);
        Assert.Equal(TrainTarget, ex[0].Target);
        Assert.Equal("She earns 20 * 2 = $40. The answer is 40.", ex[1].Target);
        Assert.Equal("In two years she reads 1,200 * 2 = 2,400 pages. The answer is 2,400.", ex[2].Target);
    }

    [Fact]
    public void Two_shot_prompt_uses_the_first_two_exemplars_in_order()
    {
        var prompt = Task(Gsm8kVariant.Cot, shots: 2).BuildPrompt(TestQ);
        var blocks = prompt.Split("\n\n");
        Assert.Equal(3, blocks.Length);
        Assert.StartsWith("Q: " + TrainQ, blocks[0]);
        Assert.StartsWith("Q: A baker sells", blocks[1]);
        Assert.Equal("Q: " + TestQ + "\nA:", blocks[2]);
    }

    [Fact]
    public void An_exemplar_equal_to_the_question_is_skipped()
    {
        var prompt = Task(Gsm8kVariant.Cot).BuildPrompt(TrainQ);
        Assert.StartsWith("Q: A baker sells", prompt);
        Assert.Equal(1, prompt.Split("Q: " + TrainQ).Length - 1);
    }

    [Fact]
    public void Few_shot_without_an_exemplar_file_is_a_user_error()
    {
        var e = Assert.Throws<RecurUserException>(() => Gsm8kTask.Create(Gsm8kVariant.Cot, new GenerationTaskOptions(NumFewshot: 1), null));
        Assert.Contains("training jsonl", e.Message);
        var e2 = Assert.Throws<RecurUserException>(() => Gsm8kTask.Create(Gsm8kVariant.Cot, new GenerationTaskOptions(NumFewshot: 5), TaskFixtures.Path("gsm8k_train.jsonl")));
        Assert.Contains("only 3 exemplars", e2.Message);
    }

    [Fact]
    public void Gold_is_the_text_after_the_last_hashes()
    {
        var docs = Gsm8kTask.LoadDocs(TaskFixtures.Path("gsm8k_test.jsonl")).Docs;
        Assert.Equal(["5", "120", "-2"], docs.Select(d => d.Gold));
        Assert.Equal([1, 2, 3], docs.Select(d => d.Line));
        Assert.Equal("12", Gsm8kTask.GoldAnswer("12"));
    }

    [Fact]
    public void Tricky_outputs_extract_and_match_as_the_harness_regexes_do()
    {
        // Each fixture line carries the expected extractions, derived by hand from gsm8k-cot.yaml.
        var lines = File.ReadAllLines(TaskFixtures.Path("gsm8k_predictions.jsonl"));
        Assert.True(lines.Length >= 15);
        foreach (var (line, i) in lines.Select((l, i) => (l, i)))
        {
            var o = JsonNode.Parse(line)!.AsObject();
            var answer = o["answer"] is JsonValue v && v.TryGetValue(out string? text) ? text : o["answer"]!.ToJsonString();
            var gold = Gsm8kTask.GoldAnswer(answer);
            var s = new Gsm8kTask(Gsm8kVariant.Cot, new GenerationTaskOptions(0)).Score(i, "", (string)o["output"]!, gold);
            Assert.True((string)o["expect_strict"]! == s.StrictExtracted, $"line {i + 1}: strict '{s.StrictExtracted}'");
            Assert.True((string)o["expect_flexible"]! == s.FlexibleExtracted, $"line {i + 1}: flexible '{s.FlexibleExtracted}'");
            Assert.True((bool)o["expect_strict_correct"]! == s.StrictCorrect, $"line {i + 1}: strict correct");
            Assert.True((bool)o["expect_flexible_correct"]! == s.FlexibleCorrect, $"line {i + 1}: flexible correct");
        }
    }

    [Theory]
    [InlineData("1,234", "1234", true)]
    [InlineData("$1,200.", "1200", true)]
    [InlineData("18.", "18", true)]
    [InlineData("18..", "18", false)]
    [InlineData("-5", "5", false)]
    [InlineData("[invalid]", "5", false)]
    [InlineData("ANSWER 5", "answer 5", true)]
    [InlineData("7", "so #### 7", true)]
    public void Exact_match_ignores_commas_dollars_hashes_trailing_period_and_case(string pred, string gold, bool expected) =>
        Assert.Equal(expected, Gsm8kTask.Match.Matches(pred, gold));

    [Fact]
    public void Evaluate_sends_prompts_in_batches_with_the_stop_sequences_and_scores_the_outputs()
    {
        var task = Task(Gsm8kVariant.CotSean);
        var data = Gsm8kTask.LoadDocs(TaskFixtures.Path("gsm8k_test.jsonl"));
        // Right for the first two problems, wrong for the third; the generator runs past a stop sequence.
        var answers = new Dictionary<string, string>
        {
            [data.Docs[0].Question] = "2 + 3 = 5. The answer is 5.\n\nQ: more",
            [data.Docs[1].Question] = "It goes 120 km. The answer is 120.",
            [data.Docs[2].Question] = "The answer is 2.",
        };
        var gen = new FakeGenerator(p => answers.First(kv => p.EndsWith("Q: " + kv.Key + "\nA: Let's think step by step.")).Value);
        var run = task.Evaluate(gen, data, batchSize: 2);

        Assert.Equal(2, gen.Calls.Count);
        Assert.Equal([2, 1], gen.Calls.Select(c => c.Prompts.Count));
        Assert.All(gen.Calls, c => Assert.Equal(["Q:", "</s>", "<|im_end|>"], c.Stops));
        Assert.All(gen.Calls, c => Assert.Equal(256, c.MaxNewTokens));
        Assert.Equal("2 + 3 = 5. The answer is 5.\n\n", run.Samples[0].Output);
        Assert.Equal([true, true, false], run.Samples.Select(s => s.StrictCorrect));
        Assert.Equal("gsm8k_cot_sean", run.Result.Task);
        Assert.Equal(2.0 / 3, run.Result.Metrics["exact_match,strict-match"], 12);
        Assert.Equal(2.0 / 3, run.Result.Metrics["exact_match,flexible-extract"], 12);
        // Sample stderr of the mean of {1,1,0}: sqrt(1/3) / sqrt(3) = 1/3.
        Assert.Equal(1.0 / 3, run.Result.Metrics["exact_match_stderr,strict-match"], 12);
        Assert.Equal("1", run.Result.Settings["num_fewshot"]);
        Assert.Contains("exact_match,flexible-extract 0.6667 ± 0.3333", run.Result.Summary());
    }

    [SharedFact]
    public void Shared_test_split_loads_its_first_five_problems()
    {
        var path = SharedAssets.Path("data", "gsm8k", "test.jsonl");
        var data = Gsm8kTask.LoadDocs(path, new TaskLoadOptions(Limit: 5));
        Assert.Equal(5, data.Docs.Count);
        Assert.Empty(data.Warnings);
        Assert.Equal([1, 2, 3, 4, 5], data.Docs.Select(d => d.Line));
        var firstLines = File.ReadLines(path).Take(5).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal((string)firstLines[i]["question"]!, data.Docs[i].Question);
            var answer = (string)firstLines[i]["answer"]!;
            Assert.Equal(answer[(answer.IndexOf("#### ", StringComparison.Ordinal) + 5)..].Trim(), data.Docs[i].Gold);
            Assert.True(long.TryParse(data.Docs[i].Gold, out _), data.Docs[i].Gold);
        }
        Assert.Equal("18", data.Docs[0].Gold);
    }

    [SharedFact]
    public void Shared_train_split_gives_clean_one_shot_exemplars()
    {
        var task = Gsm8kTask.Create(Gsm8kVariant.CotSean, new GenerationTaskOptions(1), SharedAssets.Path("data", "gsm8k", "train.jsonl"));
        Assert.Equal(2, task.ExemplarPool.Count);
        var ex = task.ExemplarPool[0];
        Assert.DoesNotContain("<<", ex.Target);
        Assert.DoesNotContain("\n", ex.Target);
        Assert.EndsWith("The answer is 72.", ex.Target);
        var prompt = task.BuildPrompt("What is 1 + 1?");
        Assert.Equal("Q: " + ex.Question + "\nA: Let's think step by step. " + ex.Target + "\n\nQ: What is 1 + 1?\nA: Let's think step by step.", prompt);
    }

    [Fact]
    public void Plain_gsm8k_uses_question_answer_prompt_whole_answer_exemplars_and_its_stop_string()
    {
        // lm-eval's seeded draw over this 3-row file gives row 1 to document 0 and row 0 to document 1
        // (random.Random(1234).sample(range(3), 1) twice; PythonRandomTests checks the generator against CPython).
        var task = Task(Gsm8kVariant.Gsm8k);
        var train = File.ReadLines(TaskFixtures.Path("gsm8k_train.jsonl")).Select(l => JsonNode.Parse(l)!.AsObject()).First();
        // gsm8k.yaml: doc_to_text "Question: {{question}}\nAnswer:", doc_to_target "{{answer}}" (annotations and '#### N' kept).
        Assert.Equal("Question: " + TrainQ + "\nAnswer: " + (string)train["answer"]! + "\n\nQuestion: " + TestQ + "\nAnswer:", task.BuildPrompt(TestQ, docIndex: 1));
        Assert.Equal(["Question:", "</s>", "<|im_end|>"], task.StopSequences);
        Assert.Equal("gsm8k", task.Name);
    }

    [Theory]
    // gsm8k.yaml strict-match is '#### (\-?[0-9\.\,]+)': "The answer is N." does not count, '#### N' does.
    [InlineData("3 + 4 = 7. The answer is 7.", "[invalid]", false, true)]
    [InlineData("3 + 4 = 7\n#### 7", "7", true, true)]
    [InlineData("#### 1,000 then #### 7", "1,000", false, true)]
    [InlineData("3 + 4 = 7\n#### 7\n\nQuestion: next #### 9", "7", true, true)]
    public void Plain_gsm8k_strict_match_reads_hashes_and_compares_with_the_whole_reference(string output, string strict, bool strictOk, bool flexibleOk)
    {
        var task = new Gsm8kTask(Gsm8kVariant.Gsm8k, new GenerationTaskOptions(0));
        var gold = task.TargetOf("Add them: 3 + 4 = <<3+4=7>>7\n#### 7");
        Assert.Equal("Add them: 3 + 4 = <<3+4=7>>7\n#### 7", gold);
        var s = task.Score(0, "", output, gold);
        Assert.Equal(strict, s.StrictExtracted);
        Assert.Equal(strictOk, s.StrictCorrect);
        Assert.Equal(flexibleOk, s.FlexibleCorrect);
    }
}

public class Gsm8kSeededFewshotTests
{
    static List<Exemplar> Pool(int n) => Enumerable.Range(0, n).Select(i => new Exemplar($"train question {i}?", $"answer {i}\n#### {i}")).ToList();

    static int[][] PythonDraws(int seed, int n, int k)
    {
        var c = JsonNode.Parse(File.ReadAllText(TaskFixtures.Path("python_random_draws.json")))!["cases"]!.AsArray()
            .Single(c => c!["draws"] is not null && c["seed"]!.GetValue<long>() == seed && c["n"]!.GetValue<int>() == n && c["k"]!.GetValue<int>() == k);
        return c!["draws"]!.AsArray().Select(d => d!.AsArray().Select(v => v!.GetValue<int>()).ToArray()).ToArray();
    }

    static string Expected(IReadOnlyList<Exemplar> pool, int[] draw, string question) =>
        string.Concat(draw.Select(i => "Question: " + pool[i].Question + "\nAnswer: " + pool[i].Target + "\n\n")) + "Question: " + question + "\nAnswer:";

    [Fact]
    public void Each_document_in_order_gets_the_next_draw_of_pythons_seeded_sample()
    {
        var pool = Pool(10);
        var draws = PythonDraws(Gsm8kTask.LmEvalFewshotSeed, 10, 2);
        var task = new Gsm8kTask(Gsm8kVariant.Gsm8k, new GenerationTaskOptions(NumFewshot: 2), pool);
        var gen = new FakeGenerator(_ => "#### 1");
        var docs = Enumerable.Range(0, draws.Length).Select(i => new Gsm8kDoc(i + 1, $"test question {i}?", "#### 1")).ToList();
        task.Evaluate(gen, new TaskData<Gsm8kDoc>("test.jsonl", docs, 0, []), batchSize: 3);
        var prompts = gen.Calls.SelectMany(c => c.Prompts).ToList();
        Assert.Equal(draws.Select((d, i) => Expected(pool, d, docs[i].Question)).ToList(), prompts);
        Assert.NotEqual(draws[0], draws[1]);
    }

    [Fact]
    public void Cot_variants_keep_the_first_k_exemplars()
    {
        var task = new Gsm8kTask(Gsm8kVariant.Cot, new GenerationTaskOptions(NumFewshot: 2), Pool(10));
        Assert.Null(task.FewshotSeed);
        Assert.StartsWith("Q: train question 0?", task.BuildPrompt("q?", docIndex: 3));
    }
}
