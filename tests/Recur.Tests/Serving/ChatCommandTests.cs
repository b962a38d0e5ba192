using System.CommandLine;
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Cli;
using Recur.Engine;
using Recur.Model;
using Recur.Serving;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Serving;

/// <summary><c>recur chat</c> driven by redirected input: replies, history, /recurrences, /reset, /exit.</summary>
public sealed class ChatCommandTests
{
    static (int Code, string Out, string Err) Chat(string input, params string[] args)
    {
        var outw = new StringWriter();
        var errw = new StringWriter();
        var root = new RootCommand();
        root.Subcommands.Add(ChatCommand.Create(new StringReader(input), outw, errw));
        int code = root.Parse(["chat", .. args]).Invoke();
        return (code, outw.ToString(), errw.ToString());
    }

    /// <summary>What the chat verb should answer: the same template, history, seed and T, run directly.</summary>
    static string Expected(string model, IReadOnlyList<ChatMessage> messages, int recurrences, long seed, int maxNew)
    {
        using var tok = TokenizerLoader.Load(model);
        using var m = ModelLoader.Load(model, ScalarType.Float32, CPU);
        var runner = new ModelRunner(m, tok) { DefaultRecurrences = recurrences };
        var template = ChatTemplate.Detect(ChatTemplateFile.Read(tok.SourcePath), "<s>", "</s>");
        var ids = tok.Encode(template.Render(messages), template.AddSpecialTokens);
        int[] endOfTurn = [.. template.EndOfTurnTokens.Select(tok.TokenToId).OfType<int>()];
        return runner.Run([new TextRequest(ids, maxNew, new SamplingOptions(Seed: seed), null, template.StopStrings, endOfTurn)])[0].Text.Trim();
    }

    /// <summary>chat loads through the library's RecurModel.Load; its notes and errors name the verb's flags.</summary>
    [Fact]
    public void Load_notes_and_errors_name_the_flags()
    {
        string model = ChatModels.Plain(chatTemplate: "{{ messages | join('\\n') }}", seed: 23);
        var (code, _, err) = Chat("", "--model", model, "--recurrences", "2");
        Assert.True(code == 0, err);
        Assert.Contains("note: --recurrences ignored: this is not a recurrent model", err);
        Assert.Contains("(choose one with --chat-template)", err);
        Assert.DoesNotContain("RecurLoadOptions", err);
        var r = CliProcess.Run("chat", "--model", model, "--device", "tpu");
        Assert.Equal((1, "error: --device must be cpu or cuda[:N] (got 'tpu')"), (r.Code, r.Stderr.Trim()));
        r = CliProcess.Run("chat", "--model", ChatModels.Recurrent(seed: 24), "--recurrences", "0");
        Assert.Equal((1, $"error: --recurrences must be between 1 and {WeightCheck.MaxRecurrence} (got 0)"), (r.Code, r.Stderr.Trim()));
    }

    [Fact]
    public void Chat_keeps_history_changes_recurrences_resets_and_exits()
    {
        string model = ChatModels.Recurrent(ChatModels.ChatMLTemplate);
        var (code, output, err) = Chat("the cat sat\nhello world\n/recurrences 2\n/recurrences\n/reset\n/bogus\na dog ran\n/exit\nnot read\n",
            "--model", model, "--max-new-tokens", "4", "--seed", "10");
        Assert.True(code == 0, err);
        var replies = output.Split('\n', StringSplitOptions.None).SkipLast(1).ToArray();
        Assert.Equal(3, replies.Length);

        // Turn k uses seed 10 + k; the second turn sees the first exchange; after /reset only the new message.
        string r0 = Expected(model, [ChatMessage.User("the cat sat")], 4, 10, 4);
        Assert.Equal(r0, replies[0]);
        string r1 = Expected(model, [ChatMessage.User("the cat sat"), ChatMessage.Assistant(r0), ChatMessage.User("hello world")], 4, 11, 4);
        Assert.Equal(r1, replies[1]);
        Assert.Equal(Expected(model, [ChatMessage.User("a dog ran")], 2, 12, 4), replies[2]);

        Assert.Contains("chatml template, T = 4", err);
        Assert.Equal(2, err.Split('\n').Count(l => l == "T = 2"));
        Assert.Contains("(conversation cleared)", err);
        Assert.Contains("error: unknown command /bogus", err);
    }

    [Fact]
    public void Chat_reports_recurrences_on_a_plain_model_and_ends_at_end_of_input()
    {
        string model = ChatModels.Plain();
        var (code, output, err) = Chat("/recurrences 3\nhello\n", "--model", model, "--max-new-tokens", "3", "--system", "be brief");
        Assert.True(code == 0, err);
        Assert.Contains("plain template", err);
        Assert.Contains("not recurrent", err);
        var expected = Expected(model, [ChatMessage.System("be brief"), ChatMessage.User("hello")], 1, 0, 3);
        Assert.Equal(expected + "\n", output.Split("\n", 2)[0] + "\n");
    }

    [Fact]
    public void Chat_without_a_tokenizer_is_a_user_error()
    {
        string model = TestModels.SaveRandom(Presets.TinyTest);
        var (code, _, _) = Chat("/exit\n", "--model", model);
        Assert.Equal(1, code);
    }

    [Fact]
    public async Task Chat_binary_reads_redirected_stdin()
    {
        string model = ChatModels.Plain(ChatModels.ChatMLTemplate);
        string dir = AppContext.BaseDirectory;
        string host = Path.Combine(dir, "Recur.Cli");
        var psi = File.Exists(host) ? new ProcessStartInfo(host) : new ProcessStartInfo("dotnet") { ArgumentList = { Path.Combine(dir, "Recur.Cli.dll") } };
        foreach (var a in new[] { "chat", "--model", model, "--max-new-tokens", "3", "--threads", "1" }) psi.ArgumentList.Add(a);
        psi.RedirectStandardInput = psi.RedirectStandardOutput = psi.RedirectStandardError = true;
        using var p = Process.Start(psi)!;
        p.StandardInput.Write("the cat\n/exit\n");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { await p.WaitForExitAsync(timeout.Token); }
        catch (OperationCanceledException)
        {
            p.Kill();
            Assert.Fail("recur chat did not exit within 60 s");
        }
        string output = await stdout;
        Assert.True(p.ExitCode == 0, await stderr);
        Assert.DoesNotContain(">>>", output); // no prompt when stdin is not a terminal
        var lines = output.Split('\n');
        Assert.Equal(2, lines.Length); // one reply line, then the end
        Assert.Equal("", lines[1]);
    }
}
