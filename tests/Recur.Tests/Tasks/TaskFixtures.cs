using Recur.Tasks;
using Recur.Tests.Support;

namespace Recur.Tests.Tasks;

/// <summary>Handmade task data under tests/fixtures/tasks, scratch files, and fake models.</summary>
static class TaskFixtures
{
    public static string Path(string name) => System.IO.Path.Combine(TestModels.FixturesDir, "tasks", name);

    public static string TempFile(string content, string name = "data.jsonl")
    {
        var p = System.IO.Path.Combine(TestModels.TempDir("recur-tasks"), name);
        File.WriteAllText(p, content);
        return p;
    }
}

/// <summary>Answers each prompt from a function and records every call.</summary>
sealed class FakeGenerator(Func<string, string> answer) : IGenerator
{
    public List<(IReadOnlyList<string> Prompts, IReadOnlyList<string> Stops, int MaxNewTokens)> Calls { get; } = [];

    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, IReadOnlyList<string> stopSequences, int maxNewTokens)
    {
        Calls.Add((prompts.ToList(), stopSequences.ToList(), maxNewTokens));
        return prompts.Select(answer).ToList();
    }
}

/// <summary>Returns fixed (log-likelihood, is-greedy) results keyed by request, and records the requests.</summary>
sealed class FakeLogLikelihood(IReadOnlyDictionary<(string, string), (double, bool)> table) : ILogLikelihood
{
    public List<IReadOnlyList<(string Context, string Continuation)>> Calls { get; } = [];

    public IReadOnlyList<(double LogProb, bool IsGreedy)> Score(IReadOnlyList<(string Context, string Continuation)> requests)
    {
        Calls.Add(requests.ToList());
        return requests.Select(r => table.TryGetValue((r.Context, r.Continuation), out var v) ? v
            : throw new KeyNotFoundException($"no fake result for ({r.Context}|{r.Continuation})")).ToList();
    }
}
