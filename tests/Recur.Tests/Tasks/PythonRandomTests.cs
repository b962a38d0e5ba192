using System.Text.Json.Nodes;
using Recur.Tasks;
using Xunit;

namespace Recur.Tests.Tasks;

/// <summary>
/// <see cref="PythonRandom"/> against CPython: tests/fixtures/tasks/python_random_draws.json is written by
/// tests/reference/python_random_draws.py (stdlib <c>random</c>, python3 3.11).
/// </summary>
public class PythonRandomTests
{
    static JsonArray Cases() =>
        JsonNode.Parse(File.ReadAllText(TaskFixtures.Path("python_random_draws.json")))!["cases"]!.AsArray();

    [Fact]
    public void Getrandbits_matches_cpython_for_each_seed()
    {
        int checkedCases = 0;
        foreach (var c in Cases().Where(c => c!["getrandbits"] is not null))
        {
            var r = new PythonRandom(c!["seed"]!.GetValue<ulong>());
            var ks = c["getrandbits"]!.AsArray().Select(k => k!.GetValue<int>()).ToList();
            var expected = c["values"]!.AsArray().Select(v => v!.GetValue<uint>()).ToList();
            Assert.Equal(expected, ks.Select(r.GetRandBits).ToList());
            checkedCases++;
        }
        Assert.True(checkedCases >= 6);
    }

    [Fact]
    public void Successive_samples_on_one_generator_match_cpython_in_both_branches()
    {
        int checkedCases = 0;
        foreach (var c in Cases().Where(c => c!["draws"] is not null))
        {
            var r = new PythonRandom(c!["seed"]!.GetValue<ulong>());
            int n = c["n"]!.GetValue<int>(), k = c["k"]!.GetValue<int>();
            foreach (var draw in c["draws"]!.AsArray())
                Assert.Equal(draw!.AsArray().Select(v => v!.GetValue<int>()).ToArray(), r.SampleIndices(n, k));
            checkedCases++;
        }
        Assert.True(checkedCases >= 40);
    }

    [Fact]
    public void Sample_larger_than_the_population_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PythonRandom(1234).SampleIndices(3, 4));
    }
}
