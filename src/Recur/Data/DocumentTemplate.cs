using System.Text;

namespace Recur.Data;

/// <summary>
/// A document layout such as <c>"Question: {question}\nAnswer: {answer}"</c>: literal text with
/// <c>{field}</c> placeholders filled from one JSONL object or Parquet row. <c>{{</c> and
/// <c>}}</c> are literal braces.
/// </summary>
internal sealed class DocumentTemplate
{
    // Alternating parts: literal text, or (for a placeholder) the field's index in FieldNames.
    private readonly List<(string? Literal, int Field)> _parts;

    public IReadOnlyList<string> FieldNames { get; }

    private DocumentTemplate(List<(string?, int)> parts, List<string> fields)
    {
        _parts = parts;
        FieldNames = fields;
    }

    /// <summary>Parses <paramref name="template"/>; throws <see cref="FormatException"/> on unbalanced braces.</summary>
    public static DocumentTemplate Parse(string template)
    {
        var parts = new List<(string?, int)>();
        var fields = new List<string>();
        var literal = new StringBuilder();
        for (int i = 0; i < template.Length; i++)
        {
            char c = template[i];
            if (c == '{' && i + 1 < template.Length && template[i + 1] == '{') { literal.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < template.Length && template[i + 1] == '}') { literal.Append('}'); i++; continue; }
            if (c == '}')
                throw new FormatException($"unmatched '}}' at position {i} (write '}}}}' for a literal brace)");
            if (c != '{') { literal.Append(c); continue; }
            int end = template.IndexOf('}', i + 1);
            if (end < 0)
                throw new FormatException($"unclosed '{{' at position {i} (write '{{{{' for a literal brace)");
            string name = template[(i + 1)..end];
            if (name.Length == 0 || name.Contains('{'))
                throw new FormatException($"bad placeholder at position {i}; expected {{field_name}}");
            if (literal.Length > 0) { parts.Add((literal.ToString(), -1)); literal.Clear(); }
            int index = fields.IndexOf(name);
            if (index < 0) { index = fields.Count; fields.Add(name); }
            parts.Add((null, index));
            i = end;
        }
        if (literal.Length > 0) parts.Add((literal.ToString(), -1));
        return new DocumentTemplate(parts, fields);
    }

    /// <summary>The document for one record; <paramref name="values"/> is indexed like <see cref="FieldNames"/>.</summary>
    public string Fill(IReadOnlyList<string> values)
    {
        if (_parts.Count == 1 && _parts[0].Literal is null)
            return values[_parts[0].Field];
        var sb = new StringBuilder();
        foreach (var (lit, field) in _parts)
            sb.Append(lit ?? values[field]);
        return sb.ToString();
    }
}
