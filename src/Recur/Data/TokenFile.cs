using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;

namespace Recur.Data;

/// <summary>
/// A read-only, memory-mapped view of a flat token file: little-endian uint16 or uint32 ids,
/// back to back. Pages are loaded by the OS on demand, so a corpus larger than RAM costs only
/// the rows actually read, and several processes (ranks) share one page cache.
/// </summary>
public sealed unsafe class TokenFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private bool _disposed;

    /// <summary>Number of tokens in the file.</summary>
    public long Count { get; }

    /// <summary>2 (uint16) or 4 (uint32).</summary>
    public int BytesPerToken { get; }

    public string Path { get; }

    public TokenFile(string path, int bytesPerToken)
    {
        if (bytesPerToken is not (2 or 4))
            throw new ArgumentOutOfRangeException(nameof(bytesPerToken), bytesPerToken, "expected 2 or 4");
        Path = System.IO.Path.GetFullPath(path);
        BytesPerToken = bytesPerToken;
        long length = new FileInfo(Path).Length;
        if (length == 0 || length % bytesPerToken != 0)
            throw new RecurUserException($"Token file '{Path}' has {length} bytes; expected a positive multiple of {bytesPerToken}. Delete it to rebuild the cache.");
        Count = length / bytesPerToken;
        _map = MemoryMappedFile.CreateFromFile(Path, FileMode.Open, mapName: null, capacity: 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* p = null;
        _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _base = p + _view.PointerOffset;
    }

    /// <summary>The token at <paramref name="index"/>.</summary>
    public int this[long index]
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ArgumentOutOfRangeException.ThrowIfNegative(index);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
            return BytesPerToken == 2
                ? BinaryPrimitives.ReadUInt16LittleEndian(new ReadOnlySpan<byte>(_base + index * 2, 2))
                : (int)BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(_base + index * 4, 4));
        }
    }

    /// <summary>Copies tokens [<paramref name="start"/>, start + destination.Length) into <paramref name="destination"/>.</summary>
    public void CopyTo(long start, Span<long> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + destination.Length, Count);
        if (BytesPerToken == 2)
        {
            var src = new ReadOnlySpan<byte>(_base + start * 2, destination.Length * 2);
            for (int i = 0; i < destination.Length; i++)
                destination[i] = BinaryPrimitives.ReadUInt16LittleEndian(src.Slice(i * 2, 2));
        }
        else
        {
            var src = new ReadOnlySpan<byte>(_base + start * 4, destination.Length * 4);
            for (int i = 0; i < destination.Length; i++)
                destination[i] = BinaryPrimitives.ReadUInt32LittleEndian(src.Slice(i * 4, 4));
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
