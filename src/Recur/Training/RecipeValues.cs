using System.Text.Json;
using System.Text.Json.Serialization;
using Recur.Checkpoints;

namespace Recur.Training;

/// <summary>The optimizers of a run (METHOD §4.1).</summary>
public enum OptimizerKind
{
    /// <summary>Muon on the hidden matrices, AdamW on embeddings, head, norms and the adapter: the paper's.</summary>
    Muon,
    /// <summary>AdamW on every parameter: the paper's optimizer ablation.</summary>
    AdamW,
}

/// <summary>Where a retrofitted model's weights start (METHOD §2.8).</summary>
public enum RetrofitInit
{
    /// <summary>The base model's layers, copied.</summary>
    Pretrained,
    /// <summary>A random initialisation of the same shape: the paper's initialisation ablation.</summary>
    Random,
}

/// <summary>
/// A fixed depth for every micro-batch instead of sampling it (METHOD §3.2): <see cref="N"/> no-grad iterations,
/// then <see cref="K"/> iterations with gradients. Written "n,k" in recipes.
/// </summary>
[JsonConverter(typeof(FixedDepthConverter))]
public readonly record struct FixedDepth
{
    public FixedDepth(int n, int k)
    {
        if (n < 0 || k < 1) throw new ArgumentOutOfRangeException(nameof(k), $"fixed depth ({n}, {k}) needs n ≥ 0 and k ≥ 1");
        N = n;
        K = k;
    }

    public int N { get; }
    public int K { get; }

    /// <summary>"n,k" with n ≥ 0 and k ≥ 1; null for anything else.</summary>
    public static FixedDepth? TryParse(string text)
    {
        var p = text.Split(',', StringSplitOptions.TrimEntries);
        return p.Length == 2 && int.TryParse(p[0], out int n) && int.TryParse(p[1], out int k) && n >= 0 && k >= 1 ? new FixedDepth(n, k) : null;
    }

    public override string ToString() => $"{N},{K}";
}

/// <summary>
/// A recipe value that is not one its key accepts. A <see cref="JsonException"/>, so that the deserialiser attaches the
/// key's path (<see cref="JsonException.Path"/>); <see cref="TrainRecipe.FromJson"/> turns it into the one-line
/// "FILE: 'key' must be …" error that hand-written checks give.
/// </summary>
public sealed class RecipeValueException(string expected) : JsonException(expected)
{
    /// <summary>What the key accepts, as the rest of the error line ("must be muon or adamw").</summary>
    public string Expected { get; } = expected;
}

/// <summary>An enum written in recipes as one of a few fixed names: read once, written back the same way.</summary>
public abstract class RecipeChoiceConverter<T>(params (string Name, T Value)[] choices) : JsonConverter<T> where T : struct, Enum
{
    readonly (string Name, T Value)[] _choices = choices;
    readonly string _expected = "must be " + (choices.Length == 1 ? choices[0].Name
        : string.Join(", ", choices[..^1].Select(c => c.Name)) + " or " + choices[^1].Name);

    public override bool HandleNull => true;

    public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.String && reader.GetString() is { } s)
            foreach (var (name, value) in _choices)
                if (name == s) return value;
        throw new RecipeValueException(_expected);
    }

    public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options)
    {
        foreach (var (name, v) in _choices)
            if (EqualityComparer<T>.Default.Equals(v, value)) { writer.WriteStringValue(name); return; }
        throw new JsonException($"{typeof(T).Name}.{value} has no recipe name");
    }
}

/// <summary><c>"optimizer"</c>: muon or adamw.</summary>
public sealed class OptimizerKindConverter() : RecipeChoiceConverter<OptimizerKind>(("muon", OptimizerKind.Muon), ("adamw", OptimizerKind.AdamW));

/// <summary><c>"curriculum"</c>: linear, 1-sqrt or constant (<see cref="RecurrenceCurriculum.KindName"/>).</summary>
public sealed class CurriculumKindConverter() : RecipeChoiceConverter<CurriculumKind>(
    [.. new[] { CurriculumKind.Linear, CurriculumKind.OneMinusSqrt, CurriculumKind.Constant }.Select(k => (RecurrenceCurriculum.KindName(k), k))]);

/// <summary><c>"retrofit.init"</c>: pretrained or random.</summary>
public sealed class RetrofitInitConverter() : RecipeChoiceConverter<RetrofitInit>(("pretrained", RetrofitInit.Pretrained), ("random", RetrofitInit.Random));

/// <summary><c>"retrofit.adapter_init"</c>: default or identity.</summary>
public sealed class AdapterInitConverter() : RecipeChoiceConverter<AdapterInit>(("default", AdapterInit.Default), ("identity", AdapterInit.Identity));

/// <summary><c>"fixed_depth"</c>: the string "n,k".</summary>
public sealed class FixedDepthConverter : JsonConverter<FixedDepth>
{
    const string Expected = "must be \"n,k\" with n ≥ 0 and k ≥ 1";

    public override FixedDepth Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        reader.TokenType == JsonTokenType.String && reader.GetString() is { } s && FixedDepth.TryParse(s) is { } d ? d
            : throw new RecipeValueException(Expected);

    public override void Write(Utf8JsonWriter writer, FixedDepth value, JsonSerializerOptions options) => writer.WriteStringValue(value.ToString());
}
