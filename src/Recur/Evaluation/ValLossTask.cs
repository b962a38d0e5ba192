using System.Globalization;
using Recur.Engine;
using Recur.Model;
using Recur.Tasks;
using Recur.Tokenization;
using static TorchSharp.torch;

namespace Recur.Evaluation;

/// <summary>One scored row of held-out text: its mean cross-entropy over <c>Tokens</c> predicted tokens.</summary>
public sealed record ValLossSample(int Index, int Tokens, double Loss) : IEvalSample;

/// <summary>Held-out text packed into rows of seq_len + 1 tokens (the last row may be shorter).</summary>
public sealed record PackedRows(string Path, IReadOnlyList<int[]> Rows, int SeqLen, int Documents, IReadOnlyList<string> Warnings);

/// <summary>
/// Validation loss per recurrence (METHOD §8, mcleish7/retrofitting-recurrence:multi_recurence_eval.py): the
/// mean over rows of each row's mean next-token cross-entropy, and its exponential as perplexity.
/// </summary>
/// <remarks>
/// Rows are packed as the training data is (METHOD §5): each document becomes BOS + <c>text.strip()</c> + EOS,
/// the documents are concatenated and cut into rows of seq_len + 1 tokens that straddle documents, with no
/// document masking; a last shorter row is kept when it has something to predict. A <c>.jsonl</c> file gives
/// one document per line (its <c>text</c> field); any other file is one document. The paper's number is
/// the first 1024 rows of its validation shard (<c>--limit 1024</c>).
/// </remarks>
public static class ValLossTask
{
    public const string Name = "val_loss";

    /// <summary>Reads, tokenises and packs <paramref name="path"/>; <c>Limit</c> counts rows, not documents.</summary>
    public static PackedRows Load(string path, ITokenizer tokenizer, int seqLen, TaskLoadOptions? options = null)
    {
        options ??= TaskLoadOptions.Default;
        if (seqLen < 1) throw new RecurUserException($"sequence length must be at least 1 (got {seqLen})");
        if (options.Limit is int lim && lim < 1) throw new RecurUserException($"limit must be at least 1 (got {lim})");
        var warnings = new List<string>();
        IEnumerable<string> docs;
        if (path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
        {
            var data = Jsonl.Read(path, row => row.String("text"), options with { Limit = null });
            warnings.AddRange(data.Warnings);
            docs = data.Docs;
        }
        else
        {
            if (Directory.Exists(path)) throw new RecurUserException($"{path}: is a directory; expected a text or .jsonl file");
            if (!File.Exists(path)) throw new RecurUserException($"{path}: file not found");
            var text = File.ReadAllText(path);
            if (LmEval.PyStrip(text).Length == 0) throw new RecurUserException($"{path}: file is empty; expected text to compute a loss on");
            docs = [text];
        }

        var rows = new List<int[]>();
        var current = new List<int>(seqLen + 1);
        int used = 0;
        foreach (var doc in docs)
        {
            if (options.Limit is int want && rows.Count >= want) break;
            used++;
            if (tokenizer.BosId is int bos) current.Add(bos);
            foreach (var id in tokenizer.Encode(LmEval.PyStrip(doc), addSpecialTokens: false))
            {
                current.Add(id);
                if (current.Count == seqLen + 1) { rows.Add([.. current]); current.Clear(); }
            }
            if (tokenizer.EosId is int eos) { current.Add(eos); if (current.Count == seqLen + 1) { rows.Add([.. current]); current.Clear(); } }
        }
        if (current.Count >= 2 && (options.Limit is not int l || rows.Count < l)) rows.Add([.. current]);
        if (rows.Count == 0) throw new RecurUserException($"{path}: too little text: fewer than two tokens after tokenisation");
        if (options.Limit is int max)
        {
            if (rows.Count > max) rows.RemoveRange(max, rows.Count - max);
            else if (rows.Count < max) warnings.Add($"{path}: limit {max} is larger than the {rows.Count} rows of {seqLen + 1} tokens available; using all {rows.Count}");
        }
        return new PackedRows(path, rows, seqLen, used, warnings);
    }

    /// <summary>Scores every row at the model's current recurrence, one row per forward pass.</summary>
    public static EvalRun<ValLossSample> Evaluate(ICausalLM model, PackedRows data, Action<int, int>? progress = null, CancellationToken cancel = default)
    {
        if (data.SeqLen > model.MaxPositions)
            throw new RecurUserException($"sequence length {data.SeqLen} exceeds the model's context of {model.MaxPositions} positions");
        var samples = new List<ValLossSample>(data.Rows.Count);
        for (int i = 0; i < data.Rows.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var row = data.Rows[i];
            var inputs = tensor(row[..^1].Select(x => (long)x).ToArray(), [1, row.Length - 1]);
            var labels = tensor(row[1..].Select(x => (long)x).ToArray(), [1, row.Length - 1]);
            var (sum, n) = Loss.Sum(model, inputs, labels);
            samples.Add(new ValLossSample(i, (int)n, sum / n));
            progress?.Invoke(i + 1, data.Rows.Count);
        }
        return new EvalRun<ValLossSample>(Aggregate(samples, data), samples);
    }

    public static EvalResult Aggregate(IReadOnlyList<ValLossSample> samples, PackedRows data)
    {
        var losses = samples.Select(s => s.Loss).ToList();
        var metrics = new EvalResult.Builder()
            .Mean("loss", "none", losses)
            .Value("perplexity", "none", Math.Exp(LmEval.Mean(losses)))
            .Build();
        var settings = new Dictionary<string, string>
        {
            ["seq_len"] = data.SeqLen.ToString(CultureInfo.InvariantCulture),
            ["rows"] = data.Rows.Count.ToString(CultureInfo.InvariantCulture),
            ["tokens"] = samples.Sum(s => (long)s.Tokens).ToString(CultureInfo.InvariantCulture),
            ["documents"] = data.Documents.ToString(CultureInfo.InvariantCulture),
        };
        return new EvalResult(Name, samples.Count, metrics, settings, data.Warnings);
    }
}
