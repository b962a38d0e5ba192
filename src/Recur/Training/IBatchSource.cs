using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Recur.Training;

/// <summary>A stream of training batches whose position can be saved and restored exactly.</summary>
public interface IBatchSource : IDisposable
{
    /// <summary>The next batch: inputs and labels [B, S] int64 on the CPU (labels −100 are ignored).</summary>
    (Tensor Inputs, Tensor Labels) Next();

    /// <summary>The position, as JSON, such that <see cref="LoadState"/> continues with the same batches.</summary>
    JsonNode SaveState();

    void LoadState(JsonNode state);
}
