using Recur.Tasks;
using Xunit;

namespace Recur.Tests.Tasks;

public class MathTests
{
    // Expected values follow the Minerva rules step by step (lm_eval/tasks/minerva_math/utils.py).
    [Theory]
    [InlineData(@"\frac12", @"\frac{1}{2}")]
    [InlineData(@"\dfrac{1}{2}", @"\dfrac{1}{2}")]
    [InlineData(@"5\text{ cm}", "5")]
    [InlineData("0.50", "0.50")]
    [InlineData(@"\boxed{\$5}", "5")]
    [InlineData("x=3", "3")]
    [InlineData(@"$\frac{3}{4}$", @"\frac{3}{4}")]
    [InlineData("100,000", "100000")]
    [InlineData("(1,2)", "(1,2)")]
    [InlineData("1,000.5", "1,000.5")]
    [InlineData(@"\text{(C)}", "(C)")]
    [InlineData(@"\textbf{(B)}", "(B)")]
    [InlineData(@"90^\circ", "90")]
    [InlineData(@"\sqrt2", @"\sqrt{2}")]
    [InlineData(@"5 \text{ dollars}", "5")]
    [InlineData(@"\$5.00", "5.00")]
    [InlineData(@"\$1,000", "1000")]
    [InlineData("12 inches", "12")]
    [InlineData(@"x \in [2,5)", @"x\in[2,5)")]
    [InlineData(@"10\%", @"10\%")]
    [InlineData("3.$", "3")]
    [InlineData("a 5", "5")]
    [InlineData(@"\mbox{ft}4", "4")]
    [InlineData("\\text{\n}7", "7")]
    // Removed expressions apply inside commands too: "ft" goes from \left.
    [InlineData(@"\left( 3, \frac{\pi}{2} \right)", @"\le(3,\frac{\pi}{2}\right)")]
    public void Normalisation_follows_minerva(string input, string expected) =>
        Assert.Equal(expected, MinervaMath.NormalizeFinalAnswer(input));

    [Theory]
    [InlineData("0.50", "0.5", true)]
    [InlineData(@"\dfrac{1}{2}", @"\frac{1}{2}", true)]
    [InlineData(@"\frac{1}{2}", "0.5", true)]
    [InlineData(@"-\frac{2}{3}", @"\frac{-2}{3}", true)]
    [InlineData(@"\frac{2}{4}", @"\frac{1}{2}", true)]
    [InlineData("12.0", "12", true)]
    [InlineData(".5", "0.5", false)]   // sympy's grammar has no bare decimal point
    [InlineData("0.333", @"\frac{1}{3}", false)]
    [InlineData(@"\frac{1}{0}", @"\frac{2}{0}", false)]
    [InlineData(@"\sqrt{8}", @"2\sqrt{2}", true)]
    [InlineData("(1,2)", "(1,2)", false)]   // tuples do not parse
    [InlineData("[invalidanswer]", "[invalidanswer]", true)]   // parsed as a product of letters, as sympy does
    [InlineData("", "", false)]
    [InlineData(".", "0", false)]
    public void Equivalence_follows_lm_evals_sympy_test(string a, string b, bool expected) =>
        Assert.Equal(expected, MinervaMath.IsEquivalent(a, b));

    [Theory]
    [InlineData("We get \\boxed{7}.\nFinal Answer: The final answer is $7$. I hope it is correct.", "$7$")]
    [InlineData("Final Answer: The final answer is $5$. ", "$5$")]
    [InlineData("Final Answer: The final answer is 7", "[invalidanswer]")]
    [InlineData("so x = \\boxed{\\frac{2}{3}}.", "[invalidanswer]")]
    [InlineData("Final Answer: The final answer is $x=3$. I hope it is correct.\nFinal Answer: The final answer is 4. I hope it is correct.", "$x=3$")]
    [InlineData("Final Answer: The final answer is \\$12.50. I hope it is correct.", "\\$12.50")]
    public void Final_answer_sentence_is_extracted(string output, string expected) =>
        Assert.Equal(expected, MinervaMath.GetUnnormalizedAnswer(output));

    [Theory]
    [InlineData(@"a \boxed{\frac{1}{\sqrt{2}}} b", @"\boxed{\frac{1}{\sqrt{2}}}", @"\frac{1}{\sqrt{2}}")]
    [InlineData(@"\boxed 5$ and", @"\boxed 5", "5")]
    [InlineData(@"\boxed{1} then \boxed{2}", @"\boxed{2}", "2")]
    [InlineData(@"\fbox{3}", @"\fbox{3}", null)]
    [InlineData(@"\boxed{3", null, null)]
    [InlineData("no box", null, null)]
    public void Last_boxed_is_found_with_balanced_braces(string text, string? boxed, string? content)
    {
        Assert.Equal(boxed, MinervaMath.LastBoxedOnlyString(text));
        Assert.Equal(content, MinervaMath.RemoveBoxed(MinervaMath.LastBoxedOnlyString(text)));
    }

    [Fact]
    public void Load_takes_gold_from_the_boxed_solution_or_the_answer_field()
    {
        var data = MathTask.LoadDocs(TaskFixtures.Path("math_test.jsonl"));
        Assert.Equal([@"\frac{1}{2}", "5", "3"], data.Docs.Select(d => d.Gold));
        Assert.Equal(["Algebra", "Geometry", "Algebra"], data.Docs.Select(d => d.Subject));
    }

    [Fact]
    public void One_shot_prompt_is_exact_and_exemplar_gets_the_final_answer_sentence()
    {
        var task = MathTask.Create("minerva_math", new GenerationTaskOptions(NumFewshot: 1), TaskFixtures.Path("math_train.jsonl"));
        Assert.Equal(
            "Problem:\nWhat is $2+3$?\n\nSolution: We add: $2+3=\\boxed{5}$.\nFinal Answer: The final answer is $5$. I hope it is correct.\n\n" +
            "Problem:\nWhat is half of $1$?\n\nSolution:",
            task.BuildPrompt("What is half of $1$?"));
        // A solution that already ends with the sentence is used as it is.
        Assert.Equal("Divide by 2: $\\frac{4}{6}=\\boxed{\\frac{2}{3}}$.\nFinal Answer: The final answer is $\\frac{2}{3}$. I hope it is correct.",
            task.ExemplarPool[1].Target);
    }

    [Fact]
    public void Score_cuts_at_problem_and_boxed_fallback_is_a_separate_metric()
    {
        var a = MathTask.ScoreOutput(0, "", "Final Answer: The final answer is $\\frac12$. I hope it is correct.\n\nProblem:\nNext", @"\frac{1}{2}");
        Assert.Equal("Final Answer: The final answer is $\\frac12$. I hope it is correct.\n\n", a.Output);
        Assert.True(a.Correct);
        Assert.True(a.CorrectBoxed);

        var b = MathTask.ScoreOutput(1, "", "The side is $\\boxed{5\\text{ cm}}$.", "5");
        Assert.Equal("[invalidanswer]", b.Extracted);
        Assert.False(b.Correct);
        Assert.Equal("5", b.ExtractedBoxed);
        Assert.True(b.CorrectBoxed);

        var c = MathTask.ScoreOutput(2, "", "I am not sure.", "5");
        Assert.Equal("[invalidanswer]", c.ExtractedBoxed);
        Assert.False(c.CorrectBoxed);

        var r = new MathTask("minerva_math", new GenerationTaskOptions(0)).Aggregate([a, b, c], new Dictionary<string, string>(), []);
        Assert.Equal(1.0 / 3, r.Metrics["exact_match,none"], 12);
        Assert.Equal(2.0 / 3, r.Metrics["exact_match,boxed-fallback"], 12);
    }

    [Fact]
    public void Evaluate_stops_at_problem()
    {
        var task = new MathTask("minerva_math", new GenerationTaskOptions(NumFewshot: 0, MaxNewTokens: 64));
        var data = MathTask.LoadDocs(TaskFixtures.Path("math_test.jsonl"));
        var gen = new FakeGenerator(_ => "Final Answer: The final answer is $5$. I hope it is correct.");
        var run = task.Evaluate(gen, data);
        Assert.Single(gen.Calls);
        Assert.Equal(["Problem:"], gen.Calls[0].Stops);
        Assert.Equal(64, gen.Calls[0].MaxNewTokens);
        Assert.Equal("Problem:\nWhat is half of $1$?\n\nSolution:", gen.Calls[0].Prompts[0]);
        Assert.Equal([false, true, false], run.Samples.Select(s => s.Correct));
    }

    [Fact]
    public void Solution_without_a_box_is_named()
    {
        var p = TaskFixtures.TempFile("{\"problem\": \"p\", \"solution\": \"no box here\"}\n");
        var e = Assert.Throws<RecurUserException>(() => MathTask.LoadDocs(p));
        Assert.Contains($"{p}:1", e.Message);
        Assert.Contains(@"\boxed", e.Message);
    }
}
