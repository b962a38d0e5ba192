namespace Recur.Engine;

/// <summary>Default generation budgets that fit the model (the CLI's verbs and the library use the same rule).</summary>
public static class GenerationBudget
{
    /// <summary>
    /// <paramref name="default"/> capped at a quarter of the model's context (at least 1 token), so that a prompt still
    /// fits: a 512- or 256-token default would leave no room at all on a 256-token model.
    /// </summary>
    public static int Fit(int @default, int context) => Math.Min(@default, Math.Max(1, context / 4));
}
