using System.Diagnostics;
using Xunit;

namespace Recur.Tests.Support;

/// <summary>
/// Debian's PyTorch (<c>apt-get install python3-torch</c>, with numpy) under /usr/bin/python3, for tests that run the
/// Python files Recur writes. Tests use <see cref="PythonTorchFactAttribute"/>, which skips with a message when it is absent.
/// </summary>
public static class PythonTorch
{
    public const string Python = "/usr/bin/python3";
    static readonly Lazy<string?> Missing = new(() =>
    {
        if (!File.Exists(Python)) return $"{Python} not found (install python3-torch: apt-get install python3-torch)";
        var r = Run(TimeSpan.FromMinutes(2), "-c", "import torch, numpy");
        return r.Code == 0 ? null : $"python3-torch is not installed for {Python} (apt-get install python3-torch): {r.Stderr.Trim().Split('\n')[^1]}";
    });

    public static string? SkipReason => Missing.Value;

    public static (int Code, string Stdout, string Stderr) Run(TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["OMP_NUM_THREADS"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(entireProcessTree: true); throw new TimeoutException($"python3 {string.Join(' ', args)} did not finish in {timeout}"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}

/// <summary>A <see cref="TheoryAttribute"/> that skips when python3-torch is absent.</summary>
public sealed class PythonTorchTheoryAttribute : TheoryAttribute
{
    public PythonTorchTheoryAttribute()
    {
        if (PythonTorch.SkipReason is { } reason) Skip = reason;
    }
}
