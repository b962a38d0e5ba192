using System.IO.MemoryMappedFiles;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Recur.Checkpoints;

/// <summary>One tensor's header entry: dtype name as in the file, shape, byte range within the data section.</summary>
public sealed record SafeTensorEntry(string Name, string DType, long[] Shape, long Begin, long End)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => checked(a * b));
}

/// <summary>
/// Reader for the safetensors format (an 8-byte little-endian header length, a JSON header, then raw
/// little-endian tensor data). The whole header is validated on open, so a truncated or corrupted file
/// fails with one message naming the file and the bad key before any tensor is read.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    static readonly Dictionary<string, (ScalarType Type, int Size)> DTypes = new()
    {
        ["F64"] = (ScalarType.Float64, 8), ["F32"] = (ScalarType.Float32, 4), ["F16"] = (ScalarType.Float16, 2),
        ["BF16"] = (ScalarType.BFloat16, 2), ["I64"] = (ScalarType.Int64, 8), ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2), ["I8"] = (ScalarType.Int8, 1), ["U8"] = (ScalarType.Byte, 1), ["BOOL"] = (ScalarType.Bool, 1),
    };

    public string Path { get; }
    public IReadOnlyDictionary<string, SafeTensorEntry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    readonly long _dataStart, _length;
    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    // The whole file as one tensor per element type (libtorch's private file mapping), made on first use.
    readonly Dictionary<ScalarType, Tensor> _mapped = new();
    // The first byte of this reader's own read-only view of the file, once Address has been asked for (held until Dispose).
    unsafe byte* _pointer;

    SafeTensorsFile(string path, Dictionary<string, SafeTensorEntry> entries, Dictionary<string, string> metadata, long dataStart, long fileLength)
    {
        Path = path; Entries = entries; Metadata = metadata; _dataStart = dataStart; _length = fileLength;
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        _view = _map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
    }

    public static SafeTensorsFile Open(string path)
    {
        long length = RegularFileLength(path);
        if (length < 8) throw new RecurUserException($"{path}: truncated safetensors file ({length} bytes; expected an 8-byte header length)");
        byte[] header;
        using (var fs = File.OpenRead(path))
        {
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong n = BitConverter.ToUInt64(lenBytes);
            if (n == 0 || n > (ulong)(length - 8) || n > 100_000_000)
                throw new RecurUserException($"{path}: bad safetensors header length {n} (file has {length} bytes)");
            header = new byte[n];
            fs.ReadExactly(header);
        }
        long dataStart = 8 + header.Length, dataLength = length - dataStart;
        List<KeyValuePair<string, JsonNode?>> properties;
        try
        {
            var obj = JsonNode.Parse(Encoding.UTF8.GetString(header).TrimEnd(' ', '\0')) as JsonObject ?? throw new JsonException("not an object");
            properties = [.. obj]; // JsonObject builds its dictionary here: a repeated tensor name throws now
        }
        catch (JsonException e) { throw new RecurUserException($"{path}: safetensors header is not valid JSON ({e.Message.Split('\n')[0]})"); }
        catch (ArgumentException e) { throw new RecurUserException($"{path}: safetensors header names a tensor twice ({e.Message.Split('\n')[0]})"); }

        var entries = new Dictionary<string, SafeTensorEntry>();
        var metadata = new Dictionary<string, string>();
        foreach (var (name, node) in properties)
        {
            if (name == "__metadata__")
            {
                if (node is JsonObject m) foreach (var (k, v) in m) metadata[k] = v?.ToString() ?? "";
                continue;
            }
            try
            {
                if (node is not JsonObject t) throw new FormatException("entry is not an object");
                if (name.Length == 0 || name.Any(char.IsControl)) throw new FormatException("the tensor name is empty or holds control characters");
                string dtype = t["dtype"] is JsonValue dv && dv.TryGetValue<string>(out var ds) ? ds : throw new FormatException("'dtype' must be a string");
                if (!DTypes.TryGetValue(dtype, out var info)) throw new FormatException($"unsupported dtype '{dtype}'");
                var shape = (t["shape"] as JsonArray ?? throw new FormatException("'shape' must be a list of integers"))
                    .Select(x => x is JsonValue v && v.TryGetValue<long>(out long d) ? d : throw new FormatException("'shape' must be a list of integers")).ToArray();
                if (shape.Length > 8) throw new FormatException($"'shape' has {shape.Length} dimensions; at most 8 are supported");
                var offs = t["data_offsets"] as JsonArray ?? throw new FormatException("'data_offsets' must be a list of two integers");
                if (offs.Count != 2) throw new FormatException("'data_offsets' must have two numbers");
                long b = Offset(offs[0]), e = Offset(offs[1]);
                if (shape.Any(d => d < 0)) throw new FormatException("negative dimension in 'shape'");
                var entry = new SafeTensorEntry(name, dtype, shape, b, e);
                if (b < 0 || e < b || e > dataLength)
                    throw new FormatException($"data_offsets [{b}, {e}] run past the end of the data ({dataLength} bytes)");
                if (e - b != checked(entry.Elements * info.Size))
                    throw new FormatException($"data_offsets span {e - b} bytes but shape [{string.Join(", ", shape)}] of {dtype} needs {entry.Elements * info.Size}");
                entries[name] = entry;
            }
            catch (Exception ex) when (ex is FormatException or InvalidOperationException or JsonException or OverflowException)
            {
                throw new RecurUserException($"{path}: tensor '{Printable(name)}': {(ex is OverflowException ? "'shape' is too large" : ex.Message)}");
            }
        }
        // Each tensor owns its bytes: two entries sharing a range would alias one another's data.
        SafeTensorEntry? previous = null;
        foreach (var entry in entries.Values.Where(x => x.End > x.Begin).OrderBy(x => x.Begin))
        {
            if (previous is not null && entry.Begin < previous.End)
                throw new RecurUserException($"{path}: tensors '{Printable(previous.Name)}' and '{Printable(entry.Name)}' overlap in the data section (data_offsets [{previous.Begin}, {previous.End}] and [{entry.Begin}, {entry.End}])");
            previous = entry;
        }
        return new SafeTensorsFile(path, entries, metadata, dataStart, length);
    }

    static long Offset(JsonNode? n) =>
        n is JsonValue v && v.TryGetValue<long>(out long x) ? x : throw new FormatException("'data_offsets' must be a list of two integers");

    // Names are shown in one-line errors: control characters (a NUL, a newline) are escaped.
    static string Printable(string s) => string.Concat(s.Select(c => char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString()));

    /// <summary>
    /// The size of the file a path names, following symbolic links to their final target (the Hugging Face hub
    /// cache keeps every snapshot file as a link into blobs/); a link that leads nowhere, in a loop or to a folder
    /// is an error naming the path.
    /// </summary>
    internal static long RegularFileLength(string path)
    {
        FileSystemInfo info = new FileInfo(path);
        if (info.LinkTarget is not null)
        {
            try { info = info.ResolveLinkTarget(returnFinalTarget: true) ?? info; }
            catch (IOException e) { throw new RecurUserException($"{path}: cannot follow the symbolic link ({e.Message})"); }
            if (info is not FileInfo || Directory.Exists(info.FullName))
                throw new RecurUserException($"{path}: symbolic link to '{info.FullName}', which is not a file");
            if (!info.Exists) throw new RecurUserException($"{path}: symbolic link to '{info.FullName}', which does not exist");
        }
        else if (!info.Exists) throw new RecurUserException($"{path}: file not found");
        return ((FileInfo)info).Length;
    }

    /// <summary>Reads one tensor (CPU) in its stored dtype, or converted to <paramref name="dtype"/>.</summary>
    public unsafe Tensor Read(string name, ScalarType? dtype = null)
    {
        if (!Entries.TryGetValue(name, out var e)) throw new RecurUserException($"{Path}: missing tensor '{name}'");
        var (type, _) = DTypes[e.DType];
        long bytes = e.End - e.Begin;
        var t = empty(e.Shape, type);
        if (bytes > 0)
        {
            if (bytes > int.MaxValue) throw new RecurUserException($"{Path}: tensor '{name}' is larger than 2 GiB, which this reader does not support");
            byte* basePtr = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePtr);
            try
            {
                basePtr += _view.PointerOffset;
                t.bytes = new Span<byte>(basePtr + _dataStart + e.Begin, (int)bytes);
            }
            finally { _view.SafeMemoryMappedViewHandle.ReleasePointer(); }
        }
        if (dtype is { } d && d != type)
        {
            var c = t.to(d);
            t.Dispose();
            return c;
        }
        return t;
    }

    /// <summary>
    /// One tensor (CPU, stored dtype) over the file's bytes without copying them, or null when its offset is not a
    /// multiple of its element size. The bytes come from a private (copy-on-write) mapping of the file made by
    /// libtorch, which lives as long as any tensor over it, after this reader is disposed: writing to the tensor (an
    /// optimizer step) copies the touched pages and never reaches the file, and the file may be renamed, replaced
    /// or deleted meanwhile (the mapping keeps the old contents). Truncating or rewriting the same file in place
    /// while a model is mapped over it is not supported (Recur's own writes are atomic renames, AtomicFile.cs).
    /// </summary>
    public Tensor? Map(string name)
    {
        if (!Entries.TryGetValue(name, out var e)) throw new RecurUserException($"{Path}: missing tensor '{name}'");
        var (type, size) = DTypes[e.DType];
        long start = _dataStart + e.Begin;
        if (start % size != 0) return null;
        if (!_mapped.TryGetValue(type, out var whole))
            _mapped[type] = whole = from_file(Path, shared: false, size: _length / size, dtype: type).DetachFromDisposeScope();
        using var flat = whole.narrow(0, start / size, e.Elements);
        return flat.view(e.Shape);
    }

    /// <summary>
    /// The address of a tensor's first byte in this reader's read-only mapping of the file (shared with the page cache,
    /// never copied), valid until the reader is disposed, with no libtorch involved: the libtorch-free generation path
    /// (Engine/MappedDecoder.cs) computes on these bytes directly. Header validation on open guarantees the tensor's byte
    /// range lies inside the file.
    /// </summary>
    internal unsafe IntPtr Address(string name)
    {
        if (!Entries.TryGetValue(name, out var e)) throw new RecurUserException($"{Path}: missing tensor '{name}'");
        if (_pointer == null)
        {
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _pointer = p + _view.PointerOffset;
        }
        return (IntPtr)(_pointer + _dataStart + e.Begin);
    }

    /// <summary>The byte offset of a tensor's data from the start of the file (alignment checks).</summary>
    internal long FileOffset(string name) => _dataStart + Entries[name].Begin;

    public unsafe void Dispose()
    {
        foreach (var t in _mapped.Values) t.Dispose();
        _mapped.Clear();
        if (_pointer != null) { _view.SafeMemoryMappedViewHandle.ReleasePointer(); _pointer = null; }
        _view.Dispose();
        _map.Dispose();
    }

    /// <summary>
    /// Writes tensors as one safetensors file, atomically: to a temporary name in the same folder, then a rename.
    /// Tensors are written in the given order, contiguous, in their own dtype.
    /// </summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var m = new JsonObject();
            foreach (var (k, v) in metadata) m[k] = v;
            header["__metadata__"] = m;
        }
        long offset = 0;
        foreach (var (name, t) in list)
        {
            var dtype = DTypes.First(kv => kv.Value.Type == t.dtype).Key;
            long n = t.numel() * DTypes[dtype].Size;
            header[name] = new JsonObject
            {
                ["dtype"] = dtype,
                ["shape"] = new JsonArray(t.shape.Select(x => (JsonNode)x).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + n),
            };
            offset += n;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = (8 - json.Length % 8) % 8; // keep the data section 8-byte aligned, as the reference writer does
        var headerBytes = new byte[json.Length + pad];
        json.CopyTo(headerBytes, 0);
        for (int i = json.Length; i < headerBytes.Length; i++) headerBytes[i] = (byte)' ';

        AtomicFile.Write(path, fs =>
        {
            fs.Write(BitConverter.GetBytes((ulong)headerBytes.Length));
            fs.Write(headerBytes);
            foreach (var (_, t) in list)
            {
                // The scope holds detach()'s and cpu()'s results while contiguous() copies from them (Model/Scalars.cs).
                using var scope = NewDisposeScope();
                var c = t.detach().cpu().contiguous();
                if (c.numel() > 0) fs.Write(c.bytes);
            }
        });
    }
}
