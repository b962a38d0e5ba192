using Recur.Tasks;
using Xunit;

namespace Recur.Tests.Tasks;

public class MultipleChoiceTests
{
    [Fact]
    public void Acc_and_acc_norm_disagree_when_length_normalisation_flips_the_argmax()
    {
        // Choices "a" (1 char) and "bbbb" (4 chars): summed −2 > −4 picks "a"; per character −2 < −1 picks "bbbb".
        var doc = new ChoiceDoc(1, "ctx", ["a", "bbbb"], Gold: 1);
        var s = MultipleChoiceTask.Score(0, doc, [(-2.0, false), (-4.0, true)]);
        Assert.Equal(0, s.Pred);
        Assert.Equal(1, s.PredNorm);
        Assert.False(s.Acc);
        Assert.True(s.AccNorm);
    }

    [Fact]
    public void Acc_norm_divides_by_characters_not_utf16_units()
    {
        // Python's len("😀😀") is 2 (UTF-16 would say 4): −2.2/2 = −1.1 < −3/3 = −1.0, so choice 1 wins.
        var doc = new ChoiceDoc(1, "ctx", ["😀😀", "abc"], Gold: 1);
        var s = MultipleChoiceTask.Score(0, doc, [(-2.2, false), (-3.0, false)]);
        Assert.Equal(0, s.Pred);
        Assert.Equal(1, s.PredNorm);
    }

    [Fact]
    public void Ties_go_to_the_first_choice()
    {
        var doc = new ChoiceDoc(1, "ctx", ["ab", "cd", "ef"], Gold: 1);
        var s = MultipleChoiceTask.Score(0, doc, [(-3.0, false), (-1.0, false), (-1.0, false)]);
        Assert.Equal(1, s.Pred);
        Assert.Equal(1, s.PredNorm);
    }

    [Fact]
    public void Generic_task_builds_space_delimited_requests_and_aggregates()
    {
        var task = MultipleChoiceTask.ForName("multiple_choice");
        var data = task.Load(TaskFixtures.Path("mc_generic.jsonl"));
        var table = new Dictionary<(string, string), (double, bool)>
        {
            [("The sky on a clear day is", " a")] = (-2.0, false),
            [("The sky on a clear day is", " bbbb")] = (-4.0, false),
            [("Two plus two is", " four")] = (-1.0, true),
            [("Two plus two is", " five")] = (-5.0, false),
        };
        var model = new FakeLogLikelihood(table);
        var run = task.Evaluate(model, data, batchSize: 3);
        Assert.Equal([3, 1], model.Calls.Select(c => c.Count));
        Assert.Equal([false, true], run.Samples.Select(s => s.Acc));
        Assert.Equal([true, true], run.Samples.Select(s => s.AccNorm));
        Assert.Equal(0.5, run.Result.Metrics["acc,none"]);
        Assert.Equal(1.0, run.Result.Metrics["acc_norm,none"]);
        Assert.Equal(0.5, run.Result.Metrics["acc_stderr,none"], 12);   // sqrt(0.5)/sqrt(2)
        Assert.Equal(0.0, run.Result.Metrics["acc_norm_stderr,none"]);
    }

    [Fact]
    public void HellaSwag_context_and_endings_are_preprocessed()
    {
        var docs = MultipleChoiceTask.ForName("hellaswag").Load(TaskFixtures.Path("hellaswag.jsonl")).Docs;
        Assert.Equal("Cooking: A man stands in a kitchen. He picks up a knife", docs[0].Context);
        Assert.Equal(["and cuts an onion carefully.", "and sings  loudly.", "and leaves.", "and cooks rice."], docs[0].Choices);
        Assert.Equal(0, docs[0].Gold);
        Assert.Equal("Baking bread: How to bake bread. Preheat the oven.", docs[1].Context);
        Assert.Equal(" Mix flour and water.", docs[1].Choices[0]);
        Assert.Equal(3, docs[1].Gold);
    }

    [Fact]
    public void Arc_reads_both_layouts_and_maps_the_answer_key()
    {
        var task = MultipleChoiceTask.ForName("arc_challenge");
        var docs = task.Load(TaskFixtures.Path("arc.jsonl")).Docs;
        Assert.Equal("Question: Which object is magnetic?\nAnswer:", docs[0].Context);
        Assert.Equal(1, docs[0].Gold);
        Assert.Equal(1, docs[1].Gold);
        Assert.Equal(("Question: How many legs does a spider have?\nAnswer:", " eight"), task.BuildRequests(docs[1])[1]);
        var ai2 = task.Load(TaskFixtures.Path("arc_ai2.jsonl")).Docs[0];
        Assert.Equal(docs[0].Context, ai2.Context);
        Assert.Equal(docs[0].Choices, ai2.Choices);
        Assert.Equal(docs[0].Gold, ai2.Gold);
    }

    [Fact]
    public void Piqa_prompt_is_question_answer()
    {
        var task = MultipleChoiceTask.ForName("piqa");
        var doc = task.Load(TaskFixtures.Path("piqa.jsonl")).Docs[0];
        Assert.Equal(
            [("Question: Keep bread fresh longer\nAnswer:", " Store it in a sealed bag."), ("Question: Keep bread fresh longer\nAnswer:", " Leave it in the sun.")],
            task.BuildRequests(doc));
        Assert.Equal(0, doc.Gold);
    }

    [Fact]
    public void Winogrande_scores_the_text_after_the_blank_under_each_filled_prefix()
    {
        var task = MultipleChoiceTask.ForName("winogrande");
        var docs = task.Load(TaskFixtures.Path("winogrande.jsonl")).Docs;
        Assert.Equal(
            [("Maria lent her umbrella to Ana because Maria", " was going out in the rain."), ("Maria lent her umbrella to Ana because Ana", " was going out in the rain.")],
            task.BuildRequests(docs[0]));
        Assert.Equal(1, docs[0].Gold);
        // Only the first blank splits the sentence.
        Assert.Equal([("The box did not fit on the shelf because the box", " was too wide. Use _ again."), ("The box did not fit on the shelf because the shelf", " was too wide. Use _ again.")],
            task.BuildRequests(docs[1]));
        Assert.Equal(0, docs[1].Gold);
    }

    [Fact]
    public void Winogrande_reports_acc_only_like_the_harness()
    {
        var task = MultipleChoiceTask.ForName("winogrande");
        var doc = task.Load(TaskFixtures.Path("winogrande.jsonl")).Docs[0];
        var s = MultipleChoiceTask.Score(0, doc, [(-3.0, false), (-2.0, false)]);
        var r = task.Aggregate([s], []);
        Assert.Equal(1.0, r.Metrics["acc,none"]);
        Assert.False(r.Metrics.ContainsKey("acc_norm,none"));
        Assert.True(double.IsNaN(r.Metrics["acc_stderr,none"]));
    }

    [Fact]
    public void Lambada_splits_at_the_last_space_and_reports_greedy_acc_and_perplexity()
    {
        var data = LambadaTask.Load(TaskFixtures.Path("lambada.jsonl"));
        Assert.Equal(("she opened the door and saw her", " cat"), (data.Docs[0].Context, data.Docs[0].Continuation));
        Assert.Equal(("the  cat", " sat"), (data.Docs[1].Context, data.Docs[1].Continuation));
        var model = new FakeLogLikelihood(new Dictionary<(string, string), (double, bool)>
        {
            [("she opened the door and saw her", " cat")] = (-1.0, true),
            [("the  cat", " sat")] = (-3.0, false),
        });
        var run = LambadaTask.Evaluate(model, data);
        Assert.Equal(0.5, run.Result.Metrics["acc,none"]);
        Assert.Equal(Math.Exp(2.0), run.Result.Metrics["perplexity,none"], 12);
    }

    [Fact]
    public void Bad_labels_name_the_line_and_field()
    {
        var p = TaskFixtures.TempFile("{\"context\": \"c\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n{\"context\": \"c\", \"choices\": [\"x\", \"y\"], \"gold\": 2}\n");
        var e = Assert.Throws<RecurUserException>(() => MultipleChoiceTask.ForName("multiple_choice").Load(p));
        Assert.Contains($"{p}:2", e.Message);
        Assert.Contains("'gold'", e.Message);

        var w = TaskFixtures.TempFile("{\"sentence\": \"A _ b\", \"option1\": \"x\", \"option2\": \"y\", \"answer\": \"\"}\n");
        Assert.Contains("validation split", Assert.Throws<RecurUserException>(() => MultipleChoiceTask.ForName("winogrande").Load(w)).Message);

        var a = TaskFixtures.TempFile("{\"question\": \"q\", \"choices\": {\"text\": [\"x\", \"y\"], \"label\": [\"A\", \"B\"]}, \"answerKey\": \"E\"}\n");
        Assert.Contains("answerKey 'E'", Assert.Throws<RecurUserException>(() => MultipleChoiceTask.ForName("arc_easy").Load(a)).Message);

        Assert.Contains("unknown multiple-choice task", Assert.Throws<RecurUserException>(() => MultipleChoiceTask.ForName("boolq")).Message);
    }
}
