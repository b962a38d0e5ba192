namespace Recur;

/// <summary>
/// An error caused by the user's input (a wrong path, a broken file, a tokenizer that does not
/// belong to the model...). Its message is a single line meant to be shown as is: the CLI prints
/// it without a stack trace.
/// </summary>
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

    // Messages often embed text from other libraries (JSON parser positions, native errors) that
    // may span lines; the CLI contract is one line, so fold them here once for every caller.
    private static string OneLine(string message) =>
        string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
