namespace Recur.Tasks;

/// <summary>
/// CPython's <c>random.Random</c> as far as lm-eval's few-shot sampler uses it: MT19937 seeded the way
/// <c>random.seed(n)</c> seeds it for a non-negative int (<c>init_by_array</c> over the 32-bit words of n, least
/// significant first), <c>getrandbits(k)</c> for k ≤ 32, <c>_randbelow</c> (rejection on <c>getrandbits(bit_length)</c>)
/// and <c>sample(population, k)</c> with both of CPython 3.11's branches (Lib/random.py, Modules/_randommodule.c).
/// Lets <c>gsm8k</c> draw the exemplars <c>ContextSampler.sample</c> draws (lm_eval/api/samplers.py).
/// </summary>
public sealed class PythonRandom
{
    const int N = 624, M = 397;
    readonly uint[] _mt = new uint[N];
    int _mti;

    /// <summary>Same state as Python's <c>random.Random(seed)</c>.</summary>
    public PythonRandom(ulong seed)
    {
        var key = new List<uint>();
        do { key.Add((uint)seed); seed >>= 32; } while (seed != 0);
        InitByArray(key);
    }

    void InitGenrand(uint s)
    {
        _mt[0] = s;
        for (int i = 1; i < N; i++) _mt[i] = 1812433253u * (_mt[i - 1] ^ (_mt[i - 1] >> 30)) + (uint)i;
        _mti = N;
    }

    void InitByArray(IReadOnlyList<uint> key)
    {
        InitGenrand(19650218u);
        int i = 1, j = 0;
        for (int k = Math.Max(N, key.Count); k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1664525u)) + key[j] + (uint)j;
            i++; j++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
            if (j >= key.Count) j = 0;
        }
        for (int k = N - 1; k > 0; k--)
        {
            _mt[i] = (_mt[i] ^ ((_mt[i - 1] ^ (_mt[i - 1] >> 30)) * 1566083941u)) - (uint)i;
            i++;
            if (i >= N) { _mt[0] = _mt[N - 1]; i = 1; }
        }
        _mt[0] = 0x80000000u;
    }

    uint NextUInt32()
    {
        if (_mti >= N)
        {
            for (int k = 0; k < N; k++)
            {
                uint y = (_mt[k] & 0x80000000u) | (_mt[(k + 1) % N] & 0x7fffffffu);
                _mt[k] = _mt[(k + M) % N] ^ (y >> 1) ^ ((y & 1u) != 0 ? 0x9908b0dfu : 0u);
            }
            _mti = 0;
        }
        uint x = _mt[_mti++];
        x ^= x >> 11;
        x ^= (x << 7) & 0x9d2c5680u;
        x ^= (x << 15) & 0xefc60000u;
        x ^= x >> 18;
        return x;
    }

    /// <summary><c>getrandbits(k)</c> for 0 ≤ k ≤ 32 (one 32-bit output, its top k bits).</summary>
    public uint GetRandBits(int k)
    {
        if (k < 0 || k > 32) throw new ArgumentOutOfRangeException(nameof(k), "only 0..32 bits are supported");
        return k == 0 ? 0u : NextUInt32() >> (32 - k);
    }

    /// <summary><c>_randbelow_with_getrandbits(n)</c>: uniform in [0, n) by rejection.</summary>
    public int RandBelow(int n)
    {
        if (n <= 0) throw new ArgumentOutOfRangeException(nameof(n), "must be positive");
        int k = 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)n);
        uint r = GetRandBits(k);
        while (r >= (uint)n) r = GetRandBits(k);
        return (int)r;
    }

    /// <summary>
    /// The population indices <c>random.sample(range(n), k)</c> returns, in order. As CPython: a pool copy with
    /// swap-removal when n is at most <c>21 + 4 ** ceil(log(3k, 4))</c> (the 4-power only for k &gt; 5), otherwise
    /// redrawing indices already chosen.
    /// </summary>
    public int[] SampleIndices(int n, int k)
    {
        if (k < 0 || k > n) throw new ArgumentOutOfRangeException(nameof(k), "Sample larger than population or is negative");
        var result = new int[k];
        int setsize = 21;
        if (k > 5) setsize += (int)Math.Pow(4, Math.Ceiling(Math.Log(k * 3) / Math.Log(4)));
        if (n <= setsize)
        {
            var pool = Enumerable.Range(0, n).ToArray();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n - i);
                result[i] = pool[j];
                pool[j] = pool[n - i - 1];
            }
        }
        else
        {
            var selected = new HashSet<int>();
            for (int i = 0; i < k; i++)
            {
                int j = RandBelow(n);
                while (selected.Contains(j)) j = RandBelow(n);
                selected.Add(j);
                result[i] = j;
            }
        }
        return result;
    }

    /// <summary><c>random.sample(population, k)</c>.</summary>
    public List<T> Sample<T>(IReadOnlyList<T> population, int k) => SampleIndices(population.Count, k).Select(i => population[i]).ToList();
}
