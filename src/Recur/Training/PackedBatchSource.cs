using System.Text.Json.Nodes;
using Recur.Data;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>Training batches from a tokenised, packed dataset (Recur.Data), with its cursor as the saved state.</summary>
public sealed class PackedBatchSource : IBatchSource
{
    readonly PackedDataset _data;
    readonly bool _ownsData;
    readonly int _globalBatch, _rank, _world;
    DataLoader _loader;

    public PackedBatchSource(PackedDataset data, int globalBatch, int rank = 0, int world = 1, bool ownsData = true)
    {
        _data = data; _ownsData = ownsData; _globalBatch = globalBatch; _rank = rank; _world = world;
        _loader = data.Train(globalBatch, rank, world);
    }

    public (Tensor Inputs, Tensor Labels) Next() => _loader.Next();

    public JsonNode SaveState() => JsonNode.Parse(_loader.Cursor.ToJson())!;

    public void LoadState(JsonNode state) =>
        _loader = _data.Train(_globalBatch, _rank, _world, DataCursor.FromJson(state.ToJsonString(), "trainer_state.json data cursor"));

    public void Dispose() { if (_ownsData) _data.Dispose(); }
}

/// <summary>
/// The held-out rows of a packed dataset, in order, as batches of <paramref name="globalBatch"/> rows of which this
/// rank reads its slice; cycles when exhausted.
/// </summary>
public sealed class PackedValidation(PackedDataset data, int globalBatch, int rank = 0, int world = 1) : IBatchSource
{
    IEnumerator<RowBatch> _it = data.ValidationBatches(globalBatch, rank, world).GetEnumerator();

    public (Tensor Inputs, Tensor Labels) Next()
    {
        if (!_it.MoveNext())
        {
            _it = data.ValidationBatches(globalBatch, rank, world).GetEnumerator();
            if (!_it.MoveNext()) throw new RecurUserException("the validation split is empty (raise val_fraction)");
        }
        return _it.Current.ToTensors();
    }

    public JsonNode SaveState() => new JsonObject();
    public void LoadState(JsonNode state) { }
    public void Dispose() => _it.Dispose();
}
