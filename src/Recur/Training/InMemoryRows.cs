using System.Text.Json.Nodes;
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>
/// Batches from documents held in memory, packed the "wrapped" way (METHOD §5): documents are concatenated
/// and cut into rows of seq_len + 1 tokens, straddling rows, without document masking; only the last row is
/// padded, with labels −100 there. Rows are visited in a seeded shuffled order that changes every epoch.
/// A token stored as its bitwise complement (~id, a negative number) is input but not a target: its label is −100
/// (for example the question of a question–answer pair, when only the answer should be learned).
/// </summary>
public sealed class InMemoryRows : IBatchSource
{
    readonly int[][] _rows;   // each seq_len + 1 tokens
    readonly int[] _valid;    // real tokens per row (the rest is padding)
    readonly int _batch, _seqLen, _rank, _world;
    readonly long _seed;
    int _epoch, _position;
    int[] _order = [];

    /// <param name="batch">Rows per batch for this rank; a global batch is <paramref name="batch"/> × <paramref name="world"/>
    /// rows, of which rank r reads the r-th contiguous slice (so 1 rank × B·W rows equals W ranks × B rows).</param>
    public InMemoryRows(IEnumerable<int[]> documents, int seqLen, int batch, long seed, int padId, int rank = 0, int world = 1)
    {
        if (world < 1 || rank < 0 || rank >= world) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} of {world}");
        _seqLen = seqLen; _batch = batch; _seed = seed; _rank = rank; _world = world;
        var rows = new List<int[]>();
        var valid = new List<int>();
        var current = new List<int>(seqLen + 1);
        foreach (var doc in documents)
            foreach (var t in doc)
            {
                current.Add(t);
                if (current.Count == seqLen + 1) { rows.Add([.. current]); valid.Add(seqLen + 1); current.Clear(); }
            }
        if (current.Count > 1)
        {
            valid.Add(current.Count);
            while (current.Count < seqLen + 1) current.Add(~padId);
            rows.Add([.. current]);
        }
        if (rows.Count == 0) throw new RecurUserException("the training data is empty after tokenisation");
        _rows = [.. rows];
        _valid = [.. valid];
        Shuffle();
    }

    public int Rows => _rows.Length;
    public long Tokens => _valid.Sum(v => (long)v);

    void Shuffle()
    {
        _order = Enumerable.Range(0, _rows.Length).ToArray();
        ulong state = (ulong)(_seed * 1_000_003 + _epoch);
        for (int i = _order.Length - 1; i > 0; i--)
        {
            int j = (int)(SplitMix(ref state) % (ulong)(i + 1));
            (_order[i], _order[j]) = (_order[j], _order[i]);
        }
    }

    static ulong SplitMix(ref ulong s)
    {
        ulong z = s += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public (Tensor Inputs, Tensor Labels) Next()
    {
        var inputs = new long[_batch * _seqLen];
        var labels = new long[_batch * _seqLen];
        for (int g = 0; g < _batch * _world; g++)
        {
            if (_position >= _order.Length) { _epoch++; _position = 0; Shuffle(); }
            int r = _order[_position++];
            int b = g - _rank * _batch;
            if (b < 0 || b >= _batch) continue; // another rank's slice of the global batch
            var row = _rows[r];
            for (int t = 0; t < _seqLen; t++)
            {
                inputs[b * _seqLen + t] = row[t] < 0 ? ~row[t] : row[t];
                labels[b * _seqLen + t] = t + 1 < _valid[r] && row[t + 1] >= 0 ? row[t + 1] : Loss.IgnoreIndex;
            }
        }
        return (tensor(inputs, [_batch, _seqLen]), tensor(labels, [_batch, _seqLen]));
    }

    public JsonNode SaveState() => new JsonObject { ["epoch"] = _epoch, ["position"] = _position };

    public void LoadState(JsonNode state)
    {
        _epoch = state["epoch"]!.GetValue<int>();
        _position = state["position"]!.GetValue<int>();
        Shuffle();
    }

    public void Dispose() { }
}
