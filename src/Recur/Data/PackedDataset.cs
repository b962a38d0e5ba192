using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Recur.Model;
using Recur.Tokenization;

namespace Recur.Data;

/// <summary>One source of a <see cref="PackedDataset"/>: its token file, packed row count and split.</summary>
public sealed class PackedSource
{
    internal PackedSource(int index, DataSourceSpec spec, TokenCacheInfo info, TokenFile tokens, string tokensPath, bool built, int rowLength, long valRows, double weight)
    {
        Index = index;
        Spec = spec;
        Info = info;
        Tokens = tokens;
        TokensPath = tokensPath;
        Built = built;
        Rows = (tokens.Count + rowLength - 1) / rowLength;
        ValRows = valRows;
        Weight = weight;
    }

    public int Index { get; }
    public DataSourceSpec Spec { get; }
    /// <summary>The cache sidecar: document and token counts, tokenizer and file stamps.</summary>
    public TokenCacheInfo Info { get; }
    public TokenFile Tokens { get; }
    public string TokensPath { get; }
    /// <summary>Whether this <see cref="PackedDataset.Open"/> tokenised the source (false: the cache was reused).</summary>
    public bool Built { get; }
    /// <summary>Packed rows of <c>seq_len + 1</c> tokens; the last one may be partial (padded when read).</summary>
    public long Rows { get; }
    /// <summary>Held-out rows: the last <see cref="ValRows"/> rows of the source.</summary>
    public long ValRows { get; }
    /// <summary>Training rows: rows [0, TrainRows).</summary>
    public long TrainRows => Rows - ValRows;
    /// <summary>Normalised mixture weight (the weights of all sources add up to 1).</summary>
    public double Weight { get; }
}

/// <summary>
/// Tokenised, packed training data (METHOD §5): every source tokenised once into a cached token
/// file, cut into rows of <c>seq_len + 1</c> tokens with TRL's "wrapped" strategy, split into
/// training rows and held-out rows, and served in a seeded order by <see cref="DataLoader"/>.
/// See docs/data.md.
/// </summary>
public sealed class PackedDataset : IDisposable
{
    private readonly List<PackedSource> _sources;

    public DataSpec Spec { get; }
    public int SeqLen => Spec.SeqLen;
    /// <summary>Tokens per packed row: <c>seq_len + 1</c>, so that inputs and shifted labels both have seq_len.</summary>
    public int RowLength => Spec.SeqLen + 1;
    /// <summary>The id written after the last token of the final, partial row: EOS, as the reference pads with EOS when the tokenizer has no pad token (METHOD §5).</summary>
    public int PadId { get; }
    public IReadOnlyList<PackedSource> Sources => _sources;
    public long TrainRows => _sources.Sum(s => s.TrainRows);
    public long ValRows => _sources.Sum(s => s.ValRows);
    /// <summary>A hash of everything that decides the row order; a <see cref="DataCursor"/> only resumes on a dataset with the same one.</summary>
    public string Fingerprint { get; }

    private PackedDataset(DataSpec spec, List<PackedSource> sources, int padId)
    {
        Spec = spec;
        _sources = sources;
        PadId = padId;
        Fingerprint = ComputeFingerprint();
    }

    /// <summary>
    /// Opens <paramref name="spec"/> with token caches in <paramref name="cacheDir"/>, tokenising
    /// the sources whose cache is missing or stale (unless <paramref name="buildMissing"/> is
    /// false, then that is an error). <paramref name="progress"/> gets (source bytes read,
    /// source bytes to read) while tokenising.
    /// </summary>
    public static PackedDataset Open(DataSpec spec, ITokenizer tokenizer, string cacheDir,
        IProgress<(long Done, long Total)>? progress = null, bool buildMissing = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(tokenizer);
        spec.Validate();
        int pad = tokenizer.EosId
            ?? throw new RecurUserException($"Tokenizer '{tokenizer.SourcePath}' has no EOS token; packing needs one to end every document and to pad (METHOD §5). Set \"eos_token\" in tokenizer_config.json.");
        var tokenizerId = TokenizerIdentity.Of(tokenizer);

        var plans = new List<(DataSourceSpec Spec, SourceIdentity Id, IReadOnlyList<SourceFile> Files, string Tokens, string Sidecar, TokenCacheInfo? Reused)>();
        foreach (var s in spec.Sources)
        {
            var (id, files) = TokenCache.Identify(s);
            var (tokens, sidecar) = TokenCache.PathsFor(s, tokenizerId, cacheDir);
            plans.Add((s, id, files, tokens, sidecar, TokenCache.TryReuse(tokens, sidecar, tokenizerId, id)));
        }

        var stale = plans.Where(p => p.Reused is null).ToList();
        if (stale.Count > 0 && !buildMissing)
            throw new RecurUserException($"No up-to-date token cache for '{stale[0].Spec.Path}' in '{Path.GetFullPath(cacheDir)}' for tokenizer '{tokenizerId.Path}'; run `recur data prepare` with the same sources and tokenizer.");
        long total = stale.Sum(p => p.Files.Sum(f => f.Size)), before = 0;
        progress?.Report((0, total));

        double weightSum = spec.Sources.Sum(s => s.Weight);
        var sources = new List<PackedSource>();
        try
        {
            for (int i = 0; i < plans.Count; i++)
            {
                var p = plans[i];
                var info = p.Reused;
                if (info is null)
                {
                    long offset = before;
                    info = TokenCache.Build(p.Spec, p.Files, p.Id, tokenizer, tokenizerId, p.Tokens, p.Sidecar,
                        done => progress?.Report((offset + done, total)), cancellationToken);
                    before += p.Files.Sum(f => f.Size);
                }
                var file = new TokenFile(p.Tokens, info.BytesPerToken);
                if (file.Count != info.Tokens)
                {
                    file.Dispose();
                    throw new RecurUserException($"Token file '{p.Tokens}' holds {file.Count} tokens but its sidecar says {info.Tokens}; delete both to rebuild.");
                }
                long rows = (file.Count + spec.SeqLen) / (spec.SeqLen + 1);
                long val = ValRowsFor(spec, p.Spec, rows);
                if (rows - val > int.MaxValue)
                {
                    file.Dispose();
                    throw new RecurUserException($"Data source '{p.Spec.Path}' has {rows - val} training rows; at most {int.MaxValue} per source are supported (split it into several sources).");
                }
                sources.Add(new PackedSource(i, p.Spec, info, file, p.Tokens, p.Reused is null, spec.SeqLen + 1, val, p.Spec.Weight / weightSum));
            }
        }
        catch
        {
            foreach (var s in sources) s.Tokens.Dispose();
            throw;
        }
        return new PackedDataset(spec, sources, pad);
    }

    private static long ValRowsFor(DataSpec spec, DataSourceSpec source, long rows)
    {
        long val;
        string asked;
        if (spec.ValRows is long v)
        {
            val = v;
            asked = $"\"val_rows\" {v}";
        }
        else if (spec.ValFraction is double f && f > 0)
        {
            // At least one row, so that asking for a split always yields one.
            val = Math.Max(1, (long)Math.Round(f * rows, MidpointRounding.AwayFromZero));
            asked = $"\"val_fraction\" {f}";
        }
        else
        {
            return 0;
        }
        if (val >= rows)
            throw new RecurUserException($"Data source '{source.Path}' has {rows} packed row{(rows == 1 ? "" : "s")} of {spec.SeqLen + 1} tokens; {asked} would leave no training row (lower it or the seq_len).");
        return val;
    }

    /// <summary>
    /// Packs row <paramref name="row"/> of source <paramref name="source"/>: tokens
    /// [row·(L+1), (row+1)·(L+1)) of the source's stream, padded with <see cref="PadId"/> past
    /// its end (only the last row is short). inputs = row[:-1]; labels = row[1:], with
    /// <see cref="Loss.IgnoreIndex"/> where row[1:] is padding (TRL: labels −100 where attention_mask is 0).
    /// </summary>
    public void ReadRow(int source, long row, Span<long> inputs, Span<long> labels)
    {
        var s = _sources[source];
        ArgumentOutOfRangeException.ThrowIfNegative(row);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(row, s.Rows);
        if (inputs.Length != SeqLen || labels.Length != SeqLen)
            throw new ArgumentException($"inputs and labels must have seq_len = {SeqLen} elements");
        long start = row * RowLength;
        int valid = (int)Math.Min(RowLength, s.Tokens.Count - start);
        Span<long> buf = RowLength <= 4096 ? stackalloc long[RowLength] : new long[RowLength];
        s.Tokens.CopyTo(start, buf[..valid]);
        buf[valid..].Fill(PadId);
        buf[..SeqLen].CopyTo(inputs);
        buf[1..].CopyTo(labels);
        // Label j is token j+1 of the row; it is padding when j+1 ≥ valid.
        if (valid - 1 < SeqLen)
            labels[Math.Max(0, valid - 1)..].Fill(Loss.IgnoreIndex);
    }

    /// <summary>Reads the rows <paramref name="refs"/> into one batch.</summary>
    public RowBatch ReadRows(IReadOnlyList<RowRef> refs)
    {
        var inputs = new long[refs.Count * (long)SeqLen];
        var labels = new long[inputs.Length];
        for (int i = 0; i < refs.Count; i++)
            ReadRow(refs[i].Source, refs[i].Row, inputs.AsSpan(i * SeqLen, SeqLen), labels.AsSpan(i * SeqLen, SeqLen));
        return new RowBatch(inputs, labels, refs.Count, SeqLen, refs);
    }

    /// <summary>
    /// A training stream of global batches of <paramref name="globalBatchSize"/> rows, of which
    /// this <paramref name="rank"/> reads its contiguous slice; starts at <paramref name="resume"/> when given.
    /// </summary>
    public DataLoader Train(int globalBatchSize, int rank = 0, int worldSize = 1, DataCursor? resume = null) =>
        new(this, globalBatchSize, rank, worldSize, resume);

    /// <summary>The held-out rows in a fixed order (source by source, row by row).</summary>
    public IReadOnlyList<RowRef> ValidationRows(int? source = null)
    {
        var refs = new List<RowRef>();
        foreach (var s in _sources)
        {
            if (source is int only && s.Index != only) continue;
            for (long r = s.TrainRows; r < s.Rows; r++) refs.Add(new RowRef(s.Index, r));
        }
        return refs;
    }

    /// <summary>
    /// The held-out rows as global batches of <paramref name="globalBatchSize"/> rows (the last
    /// one may be smaller), each split into <paramref name="worldSize"/> contiguous slices like
    /// training batches; this <paramref name="rank"/> gets its slice, which may be empty in a
    /// short final batch. Restrict to one source with <paramref name="source"/>.
    /// </summary>
    public IEnumerable<RowBatch> ValidationBatches(int globalBatchSize, int rank = 0, int worldSize = 1, int? source = null)
    {
        DataLoader.CheckSharding(globalBatchSize, rank, worldSize);
        var all = ValidationRows(source);
        for (int start = 0; start < all.Count; start += globalBatchSize)
        {
            int n = Math.Min(globalBatchSize, all.Count - start);
            int lo = (int)((long)rank * n / worldSize), hi = (int)((long)(rank + 1) * n / worldSize);
            yield return ReadRows([.. all.Skip(start + lo).Take(hi - lo)]);
        }
    }

    private string ComputeFingerprint()
    {
        // Content-level facts only, no paths or file times: a run must stay resumable after its
        // data is touched or moved to another mount point, as long as the tokens are the same.
        var facts = new
        {
            seq_len = SeqLen,
            seed = Spec.Seed,
            sources = _sources.Select(s => new
            {
                template = s.Info.Source.Template,
                text_unit = s.Info.Source.TextUnit,
                tokenizer = s.Info.Tokenizer.Sha256,
                documents = s.Info.Documents,
                tokens = s.Info.Tokens,
                weight = s.Weight,
                train_rows = s.TrainRows,
                val_rows = s.ValRows,
            }),
        };
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(facts))))[..16];
    }

    public void Dispose()
    {
        foreach (var s in _sources) s.Tokens.Dispose();
    }
}
