using System.Security.Cryptography;
using System.Text;
using static TorchSharp.torch;

namespace Recur.Distributed;

/// <summary>
/// 64-bit digests (the first 8 bytes of SHA-256) for checking that ranks hold the same thing. Hashing the bytes,
/// not summing values, makes the digest exact and independent of thread counts and reduction order.
/// </summary>
public static class Fingerprint
{
    public static long OfText(string text) => BitConverter.ToInt64(SHA256.HashData(Encoding.UTF8.GetBytes(text)), 0);

    /// <summary>Names, dtypes, shapes and contents of <paramref name="tensors"/>, in the given order.</summary>
    public static long OfTensors(IEnumerable<(string Name, Tensor Value)> tensors)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, t) in tensors)
        {
            using var scope = NewDisposeScope();
            hash.AppendData(Encoding.UTF8.GetBytes($"{name}:{t.dtype}:{string.Join(',', t.shape)};"));
            var flat = t.detach().cpu().contiguous().reshape(-1);
            long n = flat.numel(), piece = (1L << 30) / flat.element_size();
            for (long off = 0; off < n; off += piece)
                hash.AppendData(flat.narrow(0, off, Math.Min(piece, n - off)).bytes);
        }
        return BitConverter.ToInt64(hash.GetHashAndReset(), 0);
    }
}
