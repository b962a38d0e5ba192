using System.Reflection;
using System.Reflection.Emit;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using TorchSharp;

namespace Recur.Tests.Support;

/// <summary>
/// Finds the places in a compilation where a TorchSharp <see cref="Scalar"/> is created for one native call and
/// not kept alive by the caller (see Recur.Model.Ops.One for why that is a bug):
/// (a) an implicit conversion to Scalar (or a ToScalar() call) whose result goes straight into a call or an
/// operator instead of a variable or field; (b) a call into TorchSharp (method, operator, constructor or
/// conversion) whose own code builds a Scalar from a number — found by reading TorchSharp's IL, so
/// <c>a + b</c> (which passes a fresh alpha of 1) is found while <c>a - b</c> (which passes none) is not.
/// </summary>
public static class ScalarLifetimeScan
{
    public static IReadOnlyList<string> Find(CSharpCompilation compilation)
    {
        var found = new List<string>();
        var torch = typeof(Scalar).Assembly;
        foreach (var tree in compilation.SyntaxTrees)
        {
            var model = compilation.GetSemanticModel(tree);
            foreach (var node in tree.GetRoot().DescendantNodes())
            {
                // The name in a.B is bound with a.B itself: look at the whole access only.
                if (node.Parent is MemberAccessExpressionSyntax ma && ma.Name == node) continue;
                string? why = node switch
                {
                    ExpressionSyntax e when ConvertsToScalarForOneCall(model, e) => "temporary Scalar (implicit conversion)",
                    InvocationExpressionSyntax i when model.GetSymbolInfo(i).Symbol is IMethodSymbol { Name: "ToScalar" } m
                        && m.ContainingType.Name == "ScalarExtensionMethods" && !IsStored(i) => "temporary Scalar (ToScalar())",
                    _ => null,
                };
                if (why == null && node is InvocationExpressionSyntax or BinaryExpressionSyntax or AssignmentExpressionSyntax
                        or BaseObjectCreationExpressionSyntax or PrefixUnaryExpressionSyntax
                    && model.GetSymbolInfo(node).Symbol is IMethodSymbol callee && BuildsScalar(callee, torch))
                    why = $"{callee.ContainingType.Name}.{callee.Name} builds a temporary Scalar";
                if (why == null && node is ExpressionSyntax ex && model.GetConversion(ex) is { IsUserDefined: true, MethodSymbol: { } conv }
                    && model.GetTypeInfo(ex).ConvertedType?.Name != nameof(Scalar) && BuildsScalar(conv, torch))
                    why = $"conversion {conv.ContainingType.Name}.{conv.Name} builds a temporary Scalar";
                if (why == null) continue;
                var line = node.GetLocation().GetLineSpan();
                string file = Path.GetRelativePath(SourceCompilation.RepoRoot, line.Path);
                found.Add($"{file}:{line.StartLinePosition.Line + 1}: {why}: {Shorten(node.ToString())}");
            }
        }
        return found.Distinct().ToList();
    }

    static string Shorten(string s)
    {
        s = string.Join(' ', s.Split((char[])['\n', '\r'], StringSplitOptions.RemoveEmptyEntries).Select(x => x.Trim()));
        return s.Length > 100 ? s[..100] + "…" : s;
    }

    static bool ConvertsToScalarForOneCall(SemanticModel model, ExpressionSyntax e)
    {
        var conversion = model.GetConversion(e);
        if (!conversion.IsUserDefined || model.GetTypeInfo(e).ConvertedType is not { Name: nameof(Scalar) } t
            || t.ContainingNamespace?.Name != "TorchSharp") return false;
        return !IsStored(e);
    }

    /// <summary>True when the value lands in a variable, a field or a return value (its owner keeps it alive).</summary>
    static bool IsStored(ExpressionSyntax e)
    {
        SyntaxNode n = e;
        while (n.Parent is ParenthesizedExpressionSyntax or ConditionalExpressionSyntax or CastExpressionSyntax
               or BinaryExpressionSyntax { RawKind: (int)SyntaxKind.CoalesceExpression })
            n = n.Parent;
        return n.Parent switch
        {
            EqualsValueClauseSyntax or ArrowExpressionClauseSyntax or ReturnStatementSyntax => true,
            AssignmentExpressionSyntax a => a.IsKind(SyntaxKind.SimpleAssignmentExpression) && a.Right == n,
            _ => false,
        };
    }

    // ---- Which TorchSharp members build a Scalar from a number inside (read from their IL, memoised). ----

    static readonly Dictionary<MethodBase, bool> Memo = new();
    static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static).Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    static bool BuildsScalar(IMethodSymbol symbol, Assembly torch)
    {
        symbol = (symbol.ReducedFrom ?? symbol).OriginalDefinition;
        if (symbol.ContainingAssembly?.Name != torch.GetName().Name) return false;
        // Making a Scalar is fine; where it goes is judged by the first rule (IsStored).
        if (symbol.Name == "ToScalar" || symbol.Name == "op_Implicit" && symbol.ContainingType.Name == nameof(Scalar)) return false;
        var type = torch.GetType(MetadataName(symbol.ContainingType));
        if (type == null) return false;
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;
        IEnumerable<MethodBase> candidates = symbol.MethodKind == MethodKind.Constructor
            ? type.GetConstructors(all)
            : type.GetMethods(all).Where(m => m.Name == symbol.MetadataName);
        var wanted = symbol.Parameters.Select(ParameterKey).ToList();
        return candidates.Where(m => m.GetParameters().Select(ParameterKey).SequenceEqual(wanted))
            .Any(m => { lock (Memo) return Builds(m, 0); });
    }

    static string MetadataName(INamedTypeSymbol t) => t.ContainingType != null
        ? MetadataName(t.ContainingType) + "+" + t.MetadataName
        : (t.ContainingNamespace is { IsGlobalNamespace: false } ns ? ns.ToDisplayString() + "." : "") + t.MetadataName;

    static string ParameterKey(IParameterSymbol p) => TypeKey(p.Type) + (p.RefKind == RefKind.None ? "" : "&");
    static string TypeKey(ITypeSymbol t) => t switch
    {
        IArrayTypeSymbol a => TypeKey(a.ElementType) + "[]",
        IPointerTypeSymbol p => TypeKey(p.PointedAtType) + "*",
        _ => t.MetadataName,
    };
    static string ParameterKey(ParameterInfo p)
    {
        var t = p.ParameterType;
        bool byRef = t.IsByRef;
        if (byRef) t = t.GetElementType()!;
        return TypeKey(t) + (byRef ? "&" : "");
    }
    static string TypeKey(Type t) => t.IsArray ? TypeKey(t.GetElementType()!) + "[]" : t.IsPointer ? TypeKey(t.GetElementType()!) + "*" : t.Name;

    static bool Builds(MethodBase m, int depth)
    {
        if (m.DeclaringType?.Assembly != typeof(Scalar).Assembly) return false;
        if (IsScalarFactory(m)) return true;
        if (Memo.TryGetValue(m, out bool known)) return known;
        if (depth > 6) return false;
        Memo[m] = false; // cycles
        bool result = Callees(m).Any(c => Builds(c, depth + 1));
        Memo[m] = result;
        return result;
    }

    /// <summary>Scalar's implicit conversions and the ToScalar() extensions of numbers: a new native Scalar each.</summary>
    static bool IsScalarFactory(MethodBase m) =>
        m is MethodInfo mi && mi.ReturnType == typeof(Scalar) && m.GetParameters() is [{ ParameterType.IsPrimitive: true } or { ParameterType.Name: "Half" or "BFloat16" or "Complex" }]
        && (m.Name == "op_Implicit" && m.DeclaringType == typeof(Scalar) || m.Name == "ToScalar");

    static List<MethodBase> Callees(MethodBase m)
    {
        var list = new List<MethodBase>();
        byte[]? il;
        try { il = m.GetMethodBody()?.GetILAsByteArray(); }
        catch (Exception) { return list; }
        if (il == null) return list;
        for (int i = 0; i < il.Length;)
        {
            OpCode op;
            if (il[i] == 0xFE) { op = OpCodesByValue[unchecked((short)(0xFE00 | il[i + 1]))]; i += 2; }
            else { op = OpCodesByValue[il[i]]; i += 1; }
            if (op.OperandType == OperandType.InlineMethod)
            {
                try
                {
                    var target = m.Module.ResolveMethod(BitConverter.ToInt32(il, i),
                        m.DeclaringType is { IsGenericType: true } dt ? dt.GetGenericArguments() : null,
                        m.IsGenericMethod ? m.GetGenericArguments() : null);
                    if (target != null) list.Add(target);
                }
                catch (ArgumentException) { }
            }
            i += op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
        }
        return list;
    }
}
