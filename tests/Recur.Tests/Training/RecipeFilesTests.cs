using Recur.Tests.Support;
using Recur.Training;
using Xunit;

namespace Recur.Tests.Training;

public class RecipeFilesTests
{
    static string RecipesDir => Path.Combine(SharedAssets.RepoRoot ?? ".", "recipes");

    public static TheoryData<string> Files()
    {
        var data = new TheoryData<string>();
        foreach (var f in Directory.GetFiles(Path.Combine(SharedAssets.RepoRoot ?? ".", "recipes"), "*.json").OrderBy(f => f)) data.Add(Path.GetFileName(f));
        return data;
    }

    [Theory, MemberData(nameof(Files))]
    public void Every_shipped_recipe_parses_and_validates_every_phase(string file)
    {
        var r = TrainRecipe.Load(Path.Combine(RecipesDir, file));
        for (int i = 0; i < r.PhaseCount; i++) r.Phase(i, file);
        Assert.False(string.IsNullOrWhiteSpace(r.Name));
    }

    [Theory]
    [InlineData("tinyllama-484-math-r4.json", 4, "4,8,4")]
    [InlineData("tinyllama-484-math-r32.json", 32, "4,8,4")]
    [InlineData("llama-3.2-1b-464-math-r32.json", 32, "4,6,4")]
    [InlineData("olmo-2-1b-464-math-r32.json", 32, "4,6,4")]
    public void Paper_recipes_carry_the_paper_defaults(string file, int rMax, string shape)
    {
        var r = TrainRecipe.Load(Path.Combine(RecipesDir, file));
        Assert.Equal(rMax, r.TrainRecurrence);
        Assert.Equal(shape, r.Retrofit!.Shape);
        Assert.Equal(CurriculumKind.OneMinusSqrt, r.Curriculum);
        Assert.Equal(0.75, r.CurriculumFraction);
        Assert.Equal(1L << 20, (long)r.MicroBatch * r.Accumulation * r.SeqLen);
        Assert.Equal((1e-3, 5e-5, 0.0025, 0.6, 8), (r.MuonLr, r.AdamWLr, r.Warmup, r.Cooldown, r.BackpropDepth));
    }
}
