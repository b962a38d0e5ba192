using System.CommandLine;
using System.Text.RegularExpressions;
using Recur.Cli;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// One vocabulary across verbs: every verb's --help, rendered as a user sees it, follows the same conventions
/// (README "Common options"): a default is shown as "[default: …]" and nowhere else; --dtype is the compute
/// dtype and --save-dtype the stored one; --force always replaces existing output; the common options name the
/// same things with the same values; train and demo accept what the README promises.
/// </summary>
public sealed partial class HelpConventionTests
{
    static IEnumerable<(string Path, Command Command)> Verbs(Command c, string path)
    {
        if (c.Subcommands.Count == 0) yield return (path, c);
        foreach (var s in c.Subcommands)
            foreach (var v in Verbs(s, path.Length == 0 ? s.Name : path + " " + s.Name)) yield return v;
    }

    static readonly (string Path, Command Command)[] All = [.. Verbs(CliRoot.Create(), "")];

    /// <summary>The help text of one verb, and its option lines joined (descriptions wrap onto indented lines).</summary>
    static (string Text, Dictionary<string, string> Options) Help(string path)
    {
        var output = new StringWriter();
        int code = CliRoot.Create().Parse([.. path.Split(' '), "--help"]).Invoke(new InvocationConfiguration { Output = output, Error = new StringWriter() });
        Assert.Equal(0, code);
        string text = output.ToString();
        var options = new Dictionary<string, string>();
        string? current = null;
        foreach (var line in text[text.IndexOf("Options:", StringComparison.Ordinal)..].Split('\n').Skip(1))
        {
            var m = OptionLine().Match(line);
            if (m.Success) { current = m.Groups["name"].Value; options[current] = line.Trim(); }
            else if (current is not null && line.StartsWith("    ", StringComparison.Ordinal)) options[current] += " " + line.Trim();
        }
        return (text, options);
    }

    [GeneratedRegex(@"^\s{2}(?:-\S+, )*(?<name>--[a-z0-9-]+)")]
    private static partial Regex OptionLine();

    public static TheoryData<string> VerbNames() => [.. All.Select(v => v.Path)];

    [Theory]
    [MemberData(nameof(VerbNames))]
    public void Every_default_is_shown_as_default_in_brackets_and_options_mean_the_same_everywhere(string verb)
    {
        var (_, options) = Help(verb);
        Assert.NotEmpty(options);
        foreach (var (name, line) in options)
        {
            // Defaults in one form only: no "(default: …)", "default 74", "default: …" outside the brackets.
            string outside = Regex.Replace(line, @"\[default: [^\]]*\]", "");
            Assert.False(Regex.IsMatch(outside, @"\(default|default:|default \d|defaults? to\b", RegexOptions.IgnoreCase),
                $"recur {verb} {name}: a default outside [default: …]: {line}");
            Assert.True(Regex.Matches(line, @"\[default: ").Count <= 1, $"recur {verb} {name}: two defaults: {line}");
            switch (name)
            {
                case "--seed" or "--threads" or "--device" or "--dtype" or "--save-dtype" or "--max-new-tokens" or "--temperature" or "--top-k" or "--top-p":
                    Assert.Contains("[default: ", line);
                    break;
            }
            switch (name)
            {
                case "--dtype":
                    Assert.Contains("Compute dtype: fp32 or bf16", line);
                    break;
                case "--save-dtype":
                    Assert.Contains("Stored dtype: fp32, bf16 or fp16", line);
                    break;
                case "--force":
                    Assert.Matches(@"--force\s+Replace ", line);
                    break;
                case "--device":
                    Assert.Contains("cpu or cuda[:N]", line);
                    break;
                case "--threads":
                    Assert.Contains("0: all cores", line);
                    break;
            }
        }
    }

    [Fact]
    public void The_verbs_that_load_a_model_to_compute_take_the_common_options()
    {
        // README: "Common options: --device, --dtype (compute dtype), --threads" for these verbs; demo takes --threads.
        foreach (var verb in new[] { "generate", "eval", "chat", "serve", "train" })
        {
            var (_, options) = Help(verb);
            Assert.True(options.ContainsKey("--device") && options.ContainsKey("--dtype") && options.ContainsKey("--threads"), $"recur {verb} lacks a common option");
        }
        Assert.True(Help("demo").Options.ContainsKey("--threads"));
        foreach (var verb in new[] { "init", "convert", "retrofit" })
        {
            var (_, options) = Help(verb);
            Assert.False(options.ContainsKey("--dtype"), $"recur {verb}: the stored dtype is --save-dtype");
            Assert.True(options.ContainsKey("--save-dtype"), $"recur {verb} lacks --save-dtype");
        }
    }
}
