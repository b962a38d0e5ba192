using System.CommandLine;
using System.Diagnostics;
using Recur.Checkpoints;
using Recur.Data;
using Recur.Model;
using Recur.Tokenization;

namespace Recur.Cli;

/// <summary><c>recur data prepare</c> and <c>recur data inspect</c>: tokenise sources into a token cache folder, and look at its packed rows.</summary>
public static class DataPrepareCommand
{
    /// <summary>The spec file that <c>prepare</c> writes into the output folder and <c>inspect</c> reads.</summary>
    public const string SpecFileName = "data.json";

    public static Command CreatePrepare()
    {
        var source = new Option<string[]>("--source") { Description = "A data file or folder (repeat to mix several sources)" };
        var weight = new Option<double[]>("--weight") { Description = "Mixture weight of each --source, in the same order [default: all 1]" };
        var specFile = new Option<string?>("--spec") { Description = "A data spec JSON file (sources, seq_len, val_fraction, seed) instead of --source" };
        var tokenizer = new Option<string>("--tokenizer") { Description = "tokenizer.json, tokenizer.model, or a folder holding one", Required = true };
        var seqLen = new Option<int?>("--seq-len") { Description = "Tokens per training row (rows hold seq_len + 1 tokens) [default: 1024, or the spec's]" };
        var field = new Option<string[]>("--field") { Description = "JSONL key / Parquet column holding the text (repeat to join several with a blank line) [default: text]" };
        var template = new Option<string?>("--template") { Description = "Document template with {field} placeholders, e.g. \"Q: {question}\\nA: {answer}\"" };
        var format = new Option<string>("--format") { Description = "How to read the sources", DefaultValueFactory = _ => "auto" };
        format.AcceptOnlyFromAmong("auto", "text", "jsonl", "parquet", "gsm8k");
        var textUnit = new Option<string>("--text-unit") { Description = "A document in a text file: the whole file, or each blank-line-separated paragraph", DefaultValueFactory = _ => "file" };
        textUnit.AcceptOnlyFromAmong("file", "paragraph");
        var skipBad = new Option<bool>("--skip-bad-lines") { Description = "Skip and count malformed JSONL lines / Parquet rows with null text instead of failing" };
        var valFraction = new Option<double?>("--val-fraction") { Description = "Share of each source's rows held out for validation (its last rows)" };
        var valRows = new Option<long?>("--val-rows") { Description = "Rows held out for validation per source, instead of --val-fraction" };
        var seed = new Option<long?>("--seed") { Description = "Seed of the training row order [default: 74, or the spec's]" };
        var output = new Option<string>("--out") { Description = "Folder for the token caches and data.json", Required = true };
        var cmd = new Command("prepare", "Tokenise data sources once into a token cache folder and report documents, tokens and packed rows")
        {
            source, weight, specFile, tokenizer, seqLen, field, template, format, textUnit, skipBad, valFraction, valRows, seed, output,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string[] sources = parse.GetValue(source) ?? [];
            double[] weights = parse.GetValue(weight) ?? [];
            string[] fields = parse.GetValue(field) ?? [];
            string? specPath = parse.GetValue(specFile);
            DataSpec spec;
            if (specPath is not null)
            {
                if (sources.Length > 0)
                    throw new RecurUserException("give either --spec or --source, not both");
                foreach (var (given, name) in new[] { (weights.Length > 0, "--weight"), (fields.Length > 0, "--field"), (parse.GetValue(template) is not null, "--template"),
                    (parse.GetValue(format) != "auto", "--format"), (parse.GetValue(textUnit) != "file", "--text-unit"), (parse.GetValue(skipBad), "--skip-bad-lines") })
                {
                    if (given) throw new RecurUserException($"{name} sets a source option; with --spec, set it in the spec's \"sources\" instead");
                }
                spec = DataSpec.Load(specPath);
            }
            else
            {
                if (sources.Length == 0)
                    throw new RecurUserException("give at least one --source PATH (or --spec FILE)");
                if (weights.Length > 0 && weights.Length != sources.Length)
                    throw new RecurUserException($"--weight given {weights.Length} time(s) for {sources.Length} --source(s); give one weight per source, in the same order");
                var fmt = ParseFormat(parse.GetValue(format)!);
                spec = new DataSpec
                {
                    Sources = [.. sources.Select((p, i) => new DataSourceSpec
                    {
                        Path = p,
                        Weight = weights.Length > 0 ? weights[i] : 1.0,
                        Format = fmt,
                        Fields = fields.Length > 0 ? fields : null,
                        Template = parse.GetValue(template)?.Replace("\\n", "\n"),
                        TextUnit = parse.GetValue(textUnit) == "paragraph" ? TextUnit.Paragraph : TextUnit.File,
                        SkipBadLines = parse.GetValue(skipBad),
                    })],
                }.ResolvePaths(Environment.CurrentDirectory);
            }
            spec = spec with
            {
                SeqLen = parse.GetValue(seqLen) ?? spec.SeqLen,
                Seed = parse.GetValue(seed) ?? spec.Seed,
            };
            if (parse.GetValue(valFraction) is double vf) spec = spec with { ValFraction = vf, ValRows = null };
            if (parse.GetValue(valRows) is long vr) spec = spec with { ValRows = vr, ValFraction = parse.GetValue(valFraction) };
            spec.Validate("command line");

            string outDir = Path.GetFullPath(parse.GetValue(output)!);
            using var tok = TokenizerLoader.Load(parse.GetValue(tokenizer)!);
            using var cancel = Common.CancelOnCtrlC();
            var sw = Stopwatch.StartNew();
            var progress = new ConsoleProgress("tokenising");
            using var data = PackedDataset.Open(spec, tok, outDir, progress, buildMissing: true, cancel.Token);
            progress.Finish();
            AtomicFile.WriteAllText(Path.Combine(outDir, SpecFileName), spec.ToJson());

            foreach (var s in data.Sources)
                Console.WriteLine(Describe(data, s));
            Console.WriteLine($"total: {data.Sources.Sum(s => s.Info.Documents):N0} documents, {data.Sources.Sum(s => s.Info.Tokens):N0} tokens, "
                + $"{data.Sources.Sum(s => s.Rows):N0} rows of {data.RowLength} tokens ({data.TrainRows:N0} train, {data.ValRows:N0} validation) in {sw.Elapsed.TotalSeconds:0.0} s");
            Console.WriteLine($"wrote {Path.Combine(outDir, SpecFileName)}");
            return 0;
        }));
        return cmd;
    }

    public static Command CreateInspect()
    {
        var dataDir = new Option<string>("--data") { Description = "A folder written by `recur data prepare`", Required = true };
        var tokenizer = new Option<string>("--tokenizer") { Description = "The tokenizer the folder was prepared with", Required = true };
        var rows = new Option<int>("--rows") { Description = "Rows to decode", DefaultValueFactory = _ => 2 };
        var split = new Option<string>("--split") { Description = "train: the first rows of the training stream (shuffled, mixed); val: the first held-out rows", DefaultValueFactory = _ => "train" };
        split.AcceptOnlyFromAmong("train", "val");
        var cmd = new Command("inspect", "Summarise a prepared data folder and decode a few packed rows, special tokens shown")
        {
            dataDir, tokenizer, rows, split,
        };
        cmd.SetAction(parse => Common.Run(parse, () =>
        {
            string dir = Path.GetFullPath(parse.GetValue(dataDir)!);
            string specPath = Path.Combine(dir, SpecFileName);
            if (!File.Exists(specPath))
                throw new RecurUserException($"'{dir}' has no {SpecFileName}; expected a folder written by `recur data prepare --out`");
            int n = parse.GetValue(rows);
            if (n < 0) throw new RecurUserException($"--rows must be ≥ 0 (got {n})");
            var spec = DataSpec.Load(specPath);
            using var tok = TokenizerLoader.Load(parse.GetValue(tokenizer)!);
            using var data = PackedDataset.Open(spec, tok, dir, buildMissing: false);
            foreach (var s in data.Sources)
                Console.WriteLine(Describe(data, s));

            IReadOnlyList<RowRef> refs;
            if (parse.GetValue(split) == "val")
            {
                refs = [.. data.ValidationRows().Take(n)];
                if (refs.Count == 0) Console.WriteLine("no validation rows (prepare with --val-fraction or --val-rows)");
            }
            else
            {
                refs = n == 0 ? [] : data.Train(n).NextRows().RowRefs;
            }
            var batch = data.ReadRows(refs);
            for (int i = 0; i < batch.Rows; i++)
            {
                var input = batch.Inputs.AsSpan(i * data.SeqLen, data.SeqLen);
                var label = batch.Labels.AsSpan(i * data.SeqLen, data.SeqLen);
                int supervised = 0;
                foreach (long l in label) if (l != Loss.IgnoreIndex) supervised++;
                // The row's real tokens: the inputs up to the first padded label, plus that last label.
                var ids = new List<int>(data.RowLength);
                for (int j = 0; j <= supervised && j < data.SeqLen; j++) ids.Add((int)input[j]);
                if (supervised == data.SeqLen) ids.Add((int)label[^1]);
                var r = refs[i];
                Console.WriteLine();
                Console.WriteLine($"--- row {i}: source {r.Source} ('{Path.GetFileName(data.Sources[r.Source].Spec.Path)}') packed row {r.Row}: {ids.Count} tokens, {supervised} supervised labels");
                Console.WriteLine(tok.Decode(ids, skipSpecialTokens: false));
            }
            return 0;
        }));
        return cmd;
    }

    private static string Describe(PackedDataset data, PackedSource s)
    {
        var info = s.Info;
        string skipped = (info.BadRecords > 0 ? $", {info.BadRecords:N0} bad records skipped" : "")
            + (info.EmptyDocuments > 0 ? $", {info.EmptyDocuments:N0} empty documents skipped" : "");
        string weight = data.Sources.Count > 1 ? $", weight {s.Weight:0.###}" : "";
        return $"source {s.Index}: {s.Spec.Path} ({info.Source.Files.Count} file{(info.Source.Files.Count == 1 ? "" : "s")}, {Common.Human(info.Source.Files.Sum(f => f.Size))}): "
            + $"{info.Documents:N0} documents, {info.Tokens:N0} tokens ({info.DType}), {s.Rows:N0} rows = {s.TrainRows:N0} train + {s.ValRows:N0} validation{weight}{skipped} "
            + $"[{(s.Built ? "tokenised" : "cached")}: {Path.GetFileName(s.TokensPath)}]";
    }

    private static SourceFormat ParseFormat(string name) => name switch
    {
        "text" => SourceFormat.Text,
        "jsonl" => SourceFormat.Jsonl,
        "parquet" => SourceFormat.Parquet,
        "gsm8k" => SourceFormat.Gsm8k,
        _ => SourceFormat.Auto,
    };

    /// <summary>A one-line progress display on stderr, redrawn at most every 0.2 s; silent when stderr is not a terminal.</summary>
    private sealed class ConsoleProgress(string label) : IProgress<(long Done, long Total)>
    {
        private readonly Stopwatch _since = Stopwatch.StartNew();
        private readonly bool _live = !Console.IsErrorRedirected;
        private bool _drawn;

        public void Report((long Done, long Total) value)
        {
            if (!_live || value.Total <= 0 || (_since.ElapsedMilliseconds < 200 && value.Done < value.Total)) return;
            _since.Restart();
            double pct = 100.0 * value.Done / value.Total;
            Console.Error.Write($"\r{label} {pct,5:0.0}% ({Common.Human(value.Done)} / {Common.Human(value.Total)})   ");
            _drawn = true;
        }

        public void Finish()
        {
            if (_drawn) Console.Error.WriteLine();
        }
    }
}
