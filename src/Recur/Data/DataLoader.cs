using static TorchSharp.torch;

namespace Recur.Data;

/// <summary>
/// The training stream of a <see cref="PackedDataset"/>: an endless sequence of global batches.
/// <list type="bullet">
/// <item>Mixture: global row slot n goes to the source s maximising (n+1)·w_s − c_s, where c_s
/// counts the rows already drawn from s (ties: lowest index). This deterministic interleaving
/// keeps every source's count less than one row above n·w_s and less than S − 1 rows below it
/// (S sources) after every n rows, so every batch has the weights' proportions up to rounding,
/// and the position needs no random state.</item>
/// <item>Order: within a source, epoch e visits its training rows in the Fisher–Yates
/// permutation drawn by SplitMix64 from (seed + e, source index). A source that runs out starts
/// its next epoch alone; a small source in a mixture is thus repeated (upsampled).</item>
/// <item>Sharding: the global batch of B rows is cut into worldSize contiguous slices of
/// B / worldSize rows; rank r reads slice r. Every rank advances over the whole global batch,
/// so cursors agree across ranks and the concatenated slices equal a single-rank batch.</item>
/// </list>
/// </summary>
public sealed class DataLoader
{
    private readonly PackedDataset _data;
    private readonly long[] _drawn;
    private readonly (long Epoch, int[]? Order)[] _orders;
    private long _rows;

    public int GlobalBatchSize { get; }
    public int LocalBatchSize => GlobalBatchSize / WorldSize;
    public int Rank { get; }
    public int WorldSize { get; }

    internal DataLoader(PackedDataset data, int globalBatchSize, int rank, int worldSize, DataCursor? resume)
    {
        CheckSharding(globalBatchSize, rank, worldSize);
        _data = data;
        GlobalBatchSize = globalBatchSize;
        Rank = rank;
        WorldSize = worldSize;
        _drawn = new long[data.Sources.Count];
        _orders = new (long, int[]?)[data.Sources.Count];
        if (resume is not null)
            Restore(resume);
    }

    internal static void CheckSharding(int globalBatchSize, int rank, int worldSize)
    {
        if (globalBatchSize < 1)
            throw new RecurUserException($"Global batch size must be ≥ 1 (got {globalBatchSize}).");
        if (worldSize < 1)
            throw new RecurUserException($"World size must be ≥ 1 (got {worldSize}).");
        if (rank < 0 || rank >= worldSize)
            throw new RecurUserException($"Rank must be in [0, {worldSize}) (got {rank}).");
        if (globalBatchSize % worldSize != 0)
            throw new RecurUserException($"Global batch size {globalBatchSize} is not divisible by the world size {worldSize}; every rank must read the same number of rows.");
    }

    /// <summary>The position after the last batch returned (or skipped), to save with a checkpoint.</summary>
    public DataCursor Cursor => new()
    {
        Dataset = _data.Fingerprint,
        Seed = _data.Spec.Seed,
        Rows = _rows,
        Sources = [.. _data.Sources.Select(s => new SourceCursor
        {
            Path = s.Spec.Path,
            Rows = _drawn[s.Index],
            Epoch = _drawn[s.Index] / s.TrainRows,
            Position = _drawn[s.Index] % s.TrainRows,
        })],
    };

    /// <summary>This rank's slice of the next global batch, as arrays.</summary>
    public RowBatch NextRows()
    {
        int lo = Rank * LocalBatchSize, hi = lo + LocalBatchSize;
        var refs = new RowRef[LocalBatchSize];
        for (int slot = 0; slot < GlobalBatchSize; slot++)
        {
            int s = PickSource();
            long k = _drawn[s]++;
            _rows++;
            if (slot >= lo && slot < hi)
                refs[slot - lo] = new RowRef(s, TrainRow(s, k));
        }
        return _data.ReadRows(refs);
    }

    /// <summary>This rank's slice of the next global batch as int64 tensors [B / worldSize, seq_len] (inputs, labels).</summary>
    public (Tensor Inputs, Tensor Labels) Next(Device? device = null) => NextRows().ToTensors(device);

    /// <summary>Advances past <paramref name="batches"/> global batches without reading any tokens.</summary>
    public void Skip(long batches)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(batches);
        long slots = checked(batches * GlobalBatchSize);
        if (_drawn.Length == 1)
        {
            _drawn[0] += slots;
            _rows += slots;
            return;
        }
        for (long i = 0; i < slots; i++)
        {
            _drawn[PickSource()]++;
            _rows++;
        }
    }

    private int PickSource()
    {
        if (_drawn.Length == 1) return 0;
        int best = 0;
        double bestDeficit = double.NegativeInfinity;
        var sources = _data.Sources;
        for (int s = 0; s < sources.Count; s++)
        {
            double deficit = (_rows + 1) * sources[s].Weight - _drawn[s];
            if (deficit > bestDeficit) { best = s; bestDeficit = deficit; }
        }
        return best;
    }

    /// <summary>The <paramref name="k"/>-th training row drawn from source <paramref name="s"/> (over all epochs).</summary>
    private long TrainRow(int s, long k)
    {
        long n = _data.Sources[s].TrainRows;
        long epoch = k / n;
        var (cachedEpoch, order) = _orders[s];
        if (order is null || cachedEpoch != epoch)
        {
            order = SplitMix64.Permutation((int)n, SplitMix64.For(unchecked(_data.Spec.Seed + epoch), (ulong)s));
            _orders[s] = (epoch, order);
        }
        return order[k % n];
    }

    private void Restore(DataCursor c)
    {
        if (c.FormatVersion != DataCursor.CurrentFormatVersion)
            throw new RecurUserException($"Data cursor format_version {c.FormatVersion} is not supported (expected {DataCursor.CurrentFormatVersion}).");
        if (c.Dataset != _data.Fingerprint)
            throw new RecurUserException($"Data cursor belongs to dataset {c.Dataset}, but this data is {_data.Fingerprint} (sources, tokenizer, seq_len, weights, split or seed differ); start a fresh cursor for new data.");
        if (c.Sources.Count != _data.Sources.Count)
            throw new RecurUserException($"Data cursor has {c.Sources.Count} sources; the data has {_data.Sources.Count}.");
        long sum = 0;
        for (int s = 0; s < c.Sources.Count; s++)
        {
            var sc = c.Sources[s];
            long n = _data.Sources[s].TrainRows;
            if (sc.Rows < 0 || sc.Epoch != sc.Rows / n || sc.Position != sc.Rows % n)
                throw new RecurUserException($"Data cursor sources[{s}] is inconsistent: rows {sc.Rows}, epoch {sc.Epoch}, position {sc.Position} with {n} training rows per epoch.");
            _drawn[s] = sc.Rows;
            sum += sc.Rows;
        }
        if (sum != c.Rows)
            throw new RecurUserException($"Data cursor is inconsistent: \"rows\" is {c.Rows} but its sources add up to {sum}.");
        _rows = c.Rows;
    }
}
