using System.Text.RegularExpressions;

namespace Recur;

/// <summary>
/// An error caused by the user's input (a wrong path, a broken file, a tokenizer that does not
/// belong to the model...). Its message is a single line meant to be shown as is: the CLI prints
/// it without a stack trace.
/// </summary>
/// <remarks>
/// The library speaks in its own terms: a message about an API parameter names it as a caller of the API writes it
/// (<c>overwrite: true</c>, <c>MaxNewTokens</c>) and lists those names in <see cref="Parameters"/>; a front end with
/// its own names for them (the CLI's flags) shows <see cref="MessageWith"/> instead of <see cref="Exception.Message"/>.
/// </remarks>
public sealed class RecurUserException : Exception
{
    public RecurUserException(string message)
        : base(OneLine(message))
    {
    }

    public RecurUserException(string message, Exception? innerException)
        : base(OneLine(message), innerException)
    {
    }

    RecurUserException(string message, IReadOnlyList<string> parameters)
        : base(OneLine(message))
    {
        Parameters = parameters;
    }

    /// <summary>
    /// An error whose message names the API parameters <paramref name="parameters"/>, each written exactly as it
    /// appears in <paramref name="message"/> (e.g. <c>"MaxNewTokens"</c>, <c>"overwrite: true"</c>).
    /// </summary>
    public static RecurUserException About(string message, params string[] parameters) => new(message, parameters);

    /// <summary>The API parameters this message names, as written in it; empty for errors about files and data.</summary>
    public IReadOnlyList<string> Parameters { get; } = [];

    /// <summary>
    /// The message with each of <see cref="Parameters"/> that <paramref name="names"/> maps replaced by its
    /// front-end name (whole words only); parameters without a mapping keep the API's name.
    /// </summary>
    public string MessageWith(IReadOnlyDictionary<string, string> names) => Rename(Message, Parameters, names);

    /// <summary>
    /// <paramref name="text"/> with each of <paramref name="parameters"/> that <paramref name="names"/> maps replaced by
    /// its front-end name (whole words only); also for notes, which carry no <see cref="Parameters"/>.
    /// </summary>
    public static string Rename(string text, IEnumerable<string> parameters, IReadOnlyDictionary<string, string> names)
    {
        foreach (var p in parameters)
            if (names.TryGetValue(p, out var name))
                text = Regex.Replace(text, $@"(?<![\w.-]){Regex.Escape(p)}(?![\w])", name.Replace("$", "$$", StringComparison.Ordinal));
        return text;
    }

    // Messages often embed text from other libraries (JSON parser positions, native errors) that
    // may span lines; the CLI contract is one line, so fold them here once for every caller.
    private static string OneLine(string message) =>
        string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
