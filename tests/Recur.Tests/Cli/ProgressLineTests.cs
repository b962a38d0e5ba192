using System.Text;
using Recur.Cli;
using Xunit;

namespace Recur.Tests.Cli;

/// <summary>
/// The live progress line of train and eval, played into a small terminal model (autowrap at the last column,
/// carriage return, erase to end of line, line feed) at the widths users have.
/// </summary>
public sealed class ProgressLineTests
{
    /// <summary>What a terminal of <paramref name="width"/> columns shows after <paramref name="text"/>, and whether any line wrapped.</summary>
    static (List<string> Rows, bool Wrapped) Play(string text, int width)
    {
        var rows = new List<StringBuilder> { new() };
        int row = 0, col = 0;
        bool wrapped = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '\r') { col = 0; continue; }
            if (c == '\n') { row++; col = 0; if (rows.Count <= row) rows.Add(new()); continue; }
            if (c == '\u001b')
            {
                Assert.True(text.AsSpan(i).StartsWith("\u001b[K"), "only erase-to-end-of-line is used");
                var r = rows[row];
                if (r.Length > col) r.Length = col;
                i += 2;
                continue;
            }
            if (col == width) { wrapped = true; row++; col = 0; if (rows.Count <= row) rows.Add(new()); }
            var line = rows[row];
            while (line.Length < col) line.Append(' ');
            if (line.Length == col) line.Append(c); else line[col] = c;
            col++;
        }
        return (rows.Select(r => r.ToString()).ToList(), wrapped);
    }

    sealed class FakeClock
    {
        public TimeSpan Now;
        public TimeSpan Read() => Now;
    }

    static string TrainStatus(int step, int total) =>
        $"phase 1 step {step}/{total} loss {3.5 - step * 0.01:0.0000} μ=4 (n,k)=(3,1) lr 1.0e-3/1.0e-3 gn 0.52 1234 tok/s MFU 1.2%";

    [Theory]
    [InlineData(60)]
    [InlineData(80)]
    [InlineData(100)]
    [InlineData(120)]
    public void Training_at_any_width_never_wraps_keeps_the_log_and_ends_at_100_percent(int width)
    {
        var sb = new StringWriter();
        var clock = new FakeClock();
        var line = new ProgressLine(sb, live: true, () => width, clock.Read);
        line.Log("model: tiny (recurrent 1,2,1), 1.2M parameters");
        line.Start("starting", 0);
        const int total = 37;
        for (int step = 1; step <= total; step++)
        {
            clock.Now += TimeSpan.FromSeconds(1.7);
            line.Update(step, total, TrainStatus(step, total));
            if (step % 10 == 0) line.Log($"checkpoint runs/x/checkpoints/step-{step}");
            line.Refresh();
        }
        // The last step can come before the last frame was drawn (ten frames a second); finishing shows 100 %.
        line.Finish();

        var (rows, wrapped) = Play(sb.ToString(), width);
        Assert.False(wrapped, "a live line wrapped");
        Assert.All(rows, r => Assert.True(r.Length < width, $"row longer than {width - 1}: '{r}'"));
        var text = rows.Where(r => r.Length > 0).ToList();
        Assert.Equal("model: tiny (recurrent 1,2,1), 1.2M parameters", text[0]);
        Assert.Equal(["checkpoint runs/x/checkpoints/step-10", "checkpoint runs/x/checkpoints/step-20", "checkpoint runs/x/checkpoints/step-30"], text.Skip(1).Take(3));
        Assert.Equal(5, text.Count); // first log, three checkpoints, one progress line: no fragments
        Assert.StartsWith("phase 1 step", text[4]);
        Assert.Contains("100%", text[4]);
        Assert.Equal("", rows[^1]); // the cursor ends on a fresh line
    }

    [Fact]
    public void Narrow_terminals_drop_the_bar_then_the_elapsed_time_then_the_eta()
    {
        var el = TimeSpan.FromSeconds(65);
        var left = TimeSpan.FromSeconds(90);
        string desc = TrainStatus(12, 300);
        string wide = ProgressLine.Frame(120, desc, 12, 300, el, left);
        Assert.Contains("[", wide);
        Assert.Contains("  4%", wide);
        Assert.Contains("1:05", wide);
        Assert.Contains("ETA 1:30", wide);
        Assert.EndsWith("…", wide.Split("  [")[0].TrimEnd()); // the description is cut, not wrapped
        string w50 = ProgressLine.Frame(50, desc, 12, 300, el, left);
        Assert.DoesNotContain("[", w50);
        Assert.Contains("1:05", w50);
        Assert.Contains("ETA 1:30", w50);
        string w40 = ProgressLine.Frame(40, desc, 12, 300, el, left);
        Assert.DoesNotContain("1:05", w40);
        Assert.Contains("ETA 1:30", w40);
        string w30 = ProgressLine.Frame(30, desc, 12, 300, el, left);
        Assert.DoesNotContain("ETA", w30);
        Assert.EndsWith("  4%", w30);
        foreach (int w in new[] { 10, 20, 30, 40, 60, 80, 100, 120, 200 })
            Assert.True(ProgressLine.Frame(w, desc, 12, 300, el, left).Length <= w - 1, $"frame wider than {w - 1}");
    }

    [Theory]
    [InlineData(80)]
    [InlineData(100)]
    [InlineData(120)]
    public void A_training_status_keeps_its_step_and_loss_beside_the_bar(int width)
    {
        string frame = ProgressLine.Frame(width, TrainStatus(14, 30), 14, 30, TimeSpan.FromSeconds(87), TimeSpan.FromSeconds(99));
        Assert.StartsWith("phase 1 step 14/30 loss 3.3600 ", frame);
        Assert.Contains("[", frame);
        Assert.Contains(" 46%  1:27  ETA 1:39", frame);
        Assert.True(frame.Length <= width - 1);
    }

    [Fact]
    public void An_evaluation_of_several_tasks_leaves_one_finished_line_and_its_summary_each()
    {
        foreach (int width in new[] { 60, 80, 120 })
        {
            var sb = new StringWriter();
            var clock = new FakeClock();
            var line = new ProgressLine(sb, live: true, () => width, clock.Read);
            foreach (int t in new[] { 1, 2, 4 })
            {
                string label = $"gsm8k T={t}";
                line.Start($"{label} (0/50 problems)", 50);
                for (int i = 1; i <= 49; i++) { clock.Now += TimeSpan.FromSeconds(0.05); line.Update(i, 50, $"{label} ({i}/50 problems)"); }
                line.Finish();
                line.Log($"{label}: done in 2.5 s: exact_match,strict-match 0.1200, exact_match,flexible-extract 0.1400");
            }
            var (rows, _) = Play(sb.ToString(), width);
            // A summary longer than the terminal is broken at spaces into indented rows (no row reaches the last
            // column, so the terminal never wraps it mid-word); a progress frame is never wrapped at all.
            Assert.All(rows, r => Assert.True(r.Length < width, $"row of {r.Length} at width {width}: '{r}'"));
            var text = new List<string>();
            foreach (var r in rows.Where(r => r.Length > 0))
                if (text.Count > 0 && r.StartsWith("  ", StringComparison.Ordinal)) text[^1] += " " + r.TrimStart(); else text.Add(r);
            Assert.Equal(6, text.Count);
            for (int k = 0; k < 3; k++)
            {
                Assert.Contains("100%", text[2 * k]);
                Assert.StartsWith($"gsm8k T={new[] { 1, 2, 4 }[k]}", text[2 * k]);
                Assert.StartsWith($"gsm8k T={new[] { 1, 2, 4 }[k]}: done in", text[2 * k + 1]);
            }
            Assert.Equal("gsm8k T=4: done in 2.5 s: exact_match,strict-match 0.1200, exact_match,flexible-extract 0.1400", text[5]);
            Assert.All(text.Where((_, i) => i % 2 == 0), r => Assert.True(r.Length < width));
        }
    }

    [Theory]
    [InlineData(60)]
    [InlineData(80)]
    public void Long_log_lines_break_between_words_on_a_terminal(int width)
    {
        const string status = "step 15/30 loss 3.4120 μ=2 (n,k)=(2,2) lr 2.0e-2/3.0e-3 gn 0.59 57 tok/s MFU 1.3%  val T=1:3.446 T=2:3.446 T=4:3.448";
        var sb = new StringWriter();
        var line = new ProgressLine(sb, live: true, () => width);
        line.Log(status);
        line.Log("checkpoint /a/very/long/path/" + new string('x', 150));
        var (rows, wrapped) = Play(sb.ToString(), width);
        Assert.False(wrapped);
        var text = rows.Where(r => r.Length > 0).ToList();
        Assert.All(text, r => Assert.True(r.Length < width, r));
        // Every row ends at a word boundary of the status: joining them gives it back, and no number is split ("1.3" / "%").
        var statusRows = text.TakeWhile(r => !r.StartsWith("checkpoint", StringComparison.Ordinal)).ToList();
        Assert.True(statusRows.Count > 1);
        Assert.All(statusRows.Skip(1), r => Assert.StartsWith("  ", r));
        static string Words(string x) => string.Join(' ', x.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(Words(status), Words(string.Join(" ", statusRows)));
        // A word longer than a row is split rather than overflowing it.
        Assert.Equal("checkpoint /a/very/long/path/" + new string('x', 150), string.Concat(text.SkipWhile(r => !r.StartsWith("checkpoint", StringComparison.Ordinal)).Select((r, i) => i == 0 ? r : r[2..])));
    }

    [Fact]
    public void Redirected_output_gets_plain_lines_and_no_control_characters()
    {
        var sb = new StringWriter();
        var line = new ProgressLine(sb, live: false, () => 80);
        line.Start("starting", 10);
        line.Log("step 1/10 loss 3.0");
        line.Update(5, 10, "step 5/10");
        line.Log("step 10/10 loss 2.0");
        line.Finish();
        Assert.Equal("step 1/10 loss 3.0\nstep 10/10 loss 2.0\n", sb.ToString().Replace("\r\n", "\n"));
    }

    [Fact]
    public void An_interrupted_run_keeps_its_last_percentage()
    {
        var sb = new StringWriter();
        var clock = new FakeClock();
        var line = new ProgressLine(sb, live: true, () => 80, clock.Read);
        line.Start("step", 100);
        clock.Now += TimeSpan.FromSeconds(5);
        line.Update(42, 100, "step 42/100");
        line.Finish(completed: false);
        var (rows, _) = Play(sb.ToString(), 80);
        Assert.Contains(" 42%", rows[0]);
        Assert.DoesNotContain("100%", rows[0]);
    }
}
