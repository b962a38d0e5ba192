using System.CommandLine;
using System.Diagnostics;
using Recur.Hub;
using Spectre.Console;

namespace Recur.Cli;

/// <summary><c>recur download OWNER/NAME --out DIR</c>: a model repository from the Hugging Face hub (or HF_ENDPOINT).</summary>
static class DownloadCommand
{
    public static Command Create()
    {
        var repo = new Argument<string>("repo") { Description = "Repository id, OWNER/NAME" };
        var revision = new Option<string>("--revision") { Description = "Branch, tag or commit", DefaultValueFactory = _ => "main" };
        var include = new Option<string[]>("--include") { Description = "Only files matching these globs, e.g. '*.safetensors' config.json (repeatable)", AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--out") { Description = "Folder to download into", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace the files in --out, also ones that came from elsewhere (everything is downloaded again)" };
        var cmd = new Command("download", "Download a model repository from the Hugging Face hub (HF_ENDPOINT, HF_TOKEN); resumable")
        {
            repo, revision, include, output, force,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string id = parse.GetValue(repo)!;
            string dir = parse.GetValue(output)!;
            var options = HubOptions.FromEnvironment();
            using var client = new HubClient(options);
            using var cancel = Common.CancelOnCtrlC();
            var sw = Stopwatch.StartNew();
            DownloadResult result;
            try
            {
                result = Console.IsErrorRedirected
                    ? client.DownloadAsync(id, dir, parse.GetValue(revision)!, parse.GetValue(include), parse.GetValue(force), new PlainProgress(Console.Error), cancel.Token).GetAwaiter().GetResult()
                    : WithBars(progress => client.DownloadAsync(id, dir, parse.GetValue(revision)!, parse.GetValue(include), parse.GetValue(force), progress, cancel.Token));
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("interrupted; rerun the same command to resume (partial files end in .incomplete)");
                return 130;
            }
            string at = result.Commit is { Length: >= 7 } c ? c[..7] : result.Revision;
            string skipped = result.UpToDate.Count > 0 ? $", {result.UpToDate.Count} already up to date" : "";
            Console.WriteLine($"{id}@{at}: {result.Downloaded.Count} file(s), {Common.Human(result.BytesDownloaded)} in {sw.Elapsed.TotalSeconds:0.0} s{skipped} -> {result.Folder}");
            return 0;
        }));
        return cmd;
    }

    static DownloadResult WithBars(Func<IDownloadProgress, Task<DownloadResult>> run)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        return console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new DownloadedColumn(), new TransferSpeedColumn(), new RemainingTimeColumn())
            .StartAsync(ctx => run(new BarProgress(ctx)))
            .GetAwaiter().GetResult();
    }

    sealed class BarProgress(ProgressContext ctx) : IDownloadProgress
    {
        readonly Dictionary<string, ProgressTask> _tasks = [];

        ProgressTask Task(string file)
        {
            lock (_tasks)
            {
                if (!_tasks.TryGetValue(file, out var t)) _tasks[file] = t = ctx.AddTask(Markup.Escape(file));
                return t;
            }
        }

        public void Started(string file, long? totalBytes, long resumedFrom)
        {
            var t = Task(file);
            if (totalBytes is long n) t.MaxValue = Math.Max(1, n);
            else t.IsIndeterminate = true;
            t.Value = resumedFrom;
        }

        public void Advanced(string file, long bytesDone) => Task(file).Value = bytesDone;

        public void Finished(string file, long bytes)
        {
            var t = Task(file);
            t.IsIndeterminate = false;
            t.MaxValue = Math.Max(1, bytes);
            t.Value = t.MaxValue;
            t.StopTask();
        }

        public void UpToDate(string file) { }

        public void Retrying(string what, int attempt, TimeSpan delay, string reason) =>
            ctx.AddTask(Markup.Escape($"{what}: {reason}; retry {attempt} in {delay.TotalSeconds:0.#} s"), autoStart: false, maxValue: 1);
    }

    /// <summary>Progress as plain lines for logs and pipes: one when a file starts, every 10 s while it runs, one when done.</summary>
    sealed class PlainProgress(TextWriter w) : IDownloadProgress
    {
        readonly Stopwatch _clock = Stopwatch.StartNew();
        TimeSpan _last;
        long? _total;

        public void Started(string file, long? totalBytes, long resumedFrom)
        {
            _total = totalBytes;
            _last = _clock.Elapsed;
            w.WriteLine($"{file}: {(totalBytes is long n ? Common.Human(n) : "size unknown")}{(resumedFrom > 0 ? $", resuming at {Common.Human(resumedFrom)}" : "")}");
        }

        public void Advanced(string file, long bytesDone)
        {
            if (_clock.Elapsed - _last < TimeSpan.FromSeconds(10)) return;
            _last = _clock.Elapsed;
            w.WriteLine($"{file}: {Common.Human(bytesDone)}{(_total is long n && n > 0 ? $" ({100.0 * bytesDone / n:0}%)" : "")}");
        }

        public void Finished(string file, long bytes) => w.WriteLine($"{file}: done ({Common.Human(bytes)})");
        public void UpToDate(string file) => w.WriteLine($"{file}: up to date");
        public void Retrying(string what, int attempt, TimeSpan delay, string reason) => w.WriteLine($"{what}: {reason}; retry {attempt} in {delay.TotalSeconds:0.#} s");
    }
}
