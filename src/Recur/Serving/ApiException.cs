namespace Recur.Serving;

/// <summary>
/// An error answered to an API client as <c>{"error": {"message", "type", "param", "code"}}</c> with an HTTP
/// status, in the shape of OpenAI's error objects.
/// </summary>
public sealed class ApiException(int status, string message, string type = "invalid_request_error", string? param = null, string? code = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string Type { get; } = type;
    public string? Param { get; } = param;
    public string? Code { get; } = code;

    public static ApiException BadValue(string param, string message) => new(400, message, param: param, code: "invalid_value");
}
