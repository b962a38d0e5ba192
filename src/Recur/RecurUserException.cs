namespace Recur;

/// <summary>
/// An error caused by the user's input (a file, a key, a flag). Its message is one line that
/// names the file or key and what was expected; the CLI prints it without a stack trace.
/// </summary>
public sealed class RecurUserException : Exception
{
    public RecurUserException(string message) : base(message) { }
    public RecurUserException(string message, Exception inner) : base(message, inner) { }
}
