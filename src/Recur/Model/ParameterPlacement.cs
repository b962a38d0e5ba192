using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Recur.Model;

/// <summary>
/// Where model constructors put new parameters. Normally nowhere special (libtorch's default device, randomly
/// initialised). Inside <see cref="Skeleton"/> on the same thread they go on libtorch's meta device: shapes and
/// dtypes only, no memory and no random initialisation, so a checkpoint loader can give every parameter the
/// tensor it read (Checkpoints/StateLoader.cs) without first filling hundreds of megabytes it then overwrites.
/// </summary>
public static class ParameterPlacement
{
    [ThreadStatic] static Device? _device;

    /// <summary>The device for parameters a constructor creates now: null (the default device) or meta.</summary>
    public static Device? Device => _device;

    /// <summary>Until disposed, models constructed on this thread have meta parameters that must all be bound before use.</summary>
    public static IDisposable Skeleton()
    {
        var previous = _device;
        _device = new Device(DeviceType.META);
        return new Restore(previous);
    }

    /// <summary>
    /// An embedding table for a model constructor: randomly initialised (TorchSharp's nn.Embedding) normally, an
    /// uninitialised meta table inside <see cref="Skeleton"/>. TorchSharp's native Embedding constructors (from_pretrained
    /// too) first fill a full CPU table, so the skeleton's is made one row long and its weight then replaced; the
    /// lookup reads only the weight.
    /// </summary>
    public static Embedding Embedding(long rows, long dim)
    {
        if (_device is not { } d) return nn.Embedding(rows, dim);
        var e = nn.Embedding(1, dim);
        e.weight = new Parameter(empty(rows, dim, device: d));
        return e;
    }

    sealed class Restore(Device? previous) : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _device = previous;
        }
    }
}
