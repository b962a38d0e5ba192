// Greedy generation from a plain Llama/OLMo-2 folder without libtorch, on the memory-mapped safetensors bytes.
//
// Loading libtorch is most of what a short `recur generate` costs before its first token: operator registration,
// a 52 MiB malloc arena and 66 MiB of libtorch_cpu.so pages, about a quarter of the CPU time of a one-token run at
// the stories110M shape (bench/RESULTS.md, "ReadyToRun CLI, and where the rest of the fixed cost sits"). Greedy
// decoding of one sequence from a folder stored in the compute dtype needs nothing from libtorch that the fast decode
// path (Model/FastDecode.cs) does not already do itself: this class hands FastDecode.Step the weights as addresses
// in the read-only mapping SafeTensorsFile keeps of each file (no copy: the weights are page-cache pages), a KV cache
// in native memory (NativeKvCache), and runs the prompt through the fast path's multi-row prefill (Model/FastRows.cs:
// every bit as one token at a time through the same Step); the next token is the argmax of the fp32 logits
// (Greedy.Argmax, libtorch's tie rule).
//
// Results: fp32 logits agree with the op-by-op forward to rounding, and greedy ids with Generation.Generate, whose
// prefill and decode steps run the same fast path code in fp32 and bf16 (tests/Recur.Tests/Model/MappedDecoderTests.cs).
//
// Nothing in this file (or what it calls) may touch TorchSharp.torch's statics — a device, a scalar, a tensor —
// since any of them loads libtorch; the CLI checks /proc/self/maps after generating (RECUR_TRACE_STARTUP=1).
using System.Runtime.InteropServices;
using Recur.Checkpoints;
using Recur.Model;
using static TorchSharp.torch;

namespace Recur.Engine;

/// <summary>
/// A plain Llama or OLMo-2 model folder opened for greedy, one-sequence generation on the CPU without libtorch, its
/// weights read in place from the mapped safetensors files (see the file header). <see cref="TryOpen"/> says when this
/// applies; otherwise load the folder with <see cref="HfCheckpoint.Load"/>, which gives the same tokens through libtorch.
/// </summary>
public sealed class MappedDecoder : IDisposable
{
    readonly WeightFiles _files;
    readonly FastDecode.Block[] _blocks;
    readonly Gemv.Matrix _embedding, _norm, _head;
    readonly FastDecode.Shape _shape;

    public ModelConfig Config { get; }
    public bool Bf16 => _shape.Bf16;
    public int VocabSize => Config.VocabSize;
    public int MaxPositions => Config.MaxPositionEmbeddings;
    public IReadOnlyList<int> EosTokenIds => Config.EosTokenId ?? [];

    MappedDecoder(ModelConfig config, WeightFiles files, FastDecode.Block[] blocks, Gemv.Matrix embedding, Gemv.Matrix norm, Gemv.Matrix head, bool bf16)
    {
        Config = config;
        _files = files;
        _blocks = blocks;
        _embedding = embedding;
        _norm = norm;
        _head = head;
        _shape = new FastDecode.Shape(config.HiddenSize, config.NumAttentionHeads, config.KvHeads, config.HeadDimension, config.IntermediateSize,
            (float)config.RmsNormEps, Rope.Frequencies(config.HeadDimension, config.RopeTheta, config.RopeScaling), bf16);
    }

    /// <summary>
    /// Sets how many threads the decode kernels use (the calling thread plus helpers), before the first generation of the
    /// process: without libtorch there is no intra-op thread count to take it from. At most the machine's cores.
    /// </summary>
    public static void SetThreads(int threads) => KernelThreads.Threads = Math.Max(1, Math.Min(threads, Environment.ProcessorCount));

    /// <summary>
    /// Opens <paramref name="folder"/> (config.json and safetensors weights of a plain Llama or OLMo-2 model) to compute
    /// in bf16 (<paramref name="bf16"/>) or fp32, or returns null with <paramref name="reason"/> when some weight is not
    /// stored in that dtype or not aligned to its element size (the libtorch loader converts or copies those). A
    /// broken or hostile folder — bad config, bad header, offsets past the end, a missing, mis-shaped or unexpected
    /// tensor — is a <see cref="RecurUserException"/> with the message the libtorch loader gives for it.
    /// </summary>
    public static MappedDecoder? TryOpen(string folder, bool bf16, out string reason, Action<string>? notice = null)
    {
        if (!Directory.Exists(folder)) throw new RecurUserException($"{folder}: model folder not found");
        string configPath = Path.Combine(folder, "config.json");
        var c = ModelConfig.Load(configPath);
        Diagnostics.StartupTrace.Mark("config read");
        var files = WeightFiles.Open(folder);
        Diagnostics.StartupTrace.Mark("safetensors headers read");
        try
        {
            WeightCheck.Decoder(c, files, configPath);
            var wanted = Wanted(c);
            // The libtorch loader's checks (StateLoader.Fill), in its order and with its messages.
            foreach (var (key, shape) in wanted)
            {
                if (!files.Contains(key)) throw new RecurUserException($"{files.Folder}: missing tensor '{key}' (shape [{string.Join(", ", shape)}])");
                var e = files.Entry(key);
                if (!e.Shape.SequenceEqual(shape))
                    throw new RecurUserException($"{files.FileOf(key)}: tensor '{key}' has shape [{string.Join(", ", e.Shape)}], expected [{string.Join(", ", shape)}]");
            }
            var names = wanted.Select(w => w.Key).ToHashSet();
            var extra = files.Names.Where(n => !names.Contains(n)).OrderBy(n => n, StringComparer.Ordinal).ToList();
            var fatal = extra.Where(n => !(n.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal) || (c.TieWordEmbeddings && n == "lm_head.weight"))).ToList();
            if (fatal.Count > 0)
                throw new RecurUserException($"{files.FileOf(fatal[0])}: unexpected tensor '{fatal[0]}'" + (fatal.Count > 1 ? $" (and {fatal.Count - 1} more)" : "") + " that the model does not have");
            string dtype = bf16 ? "BF16" : "F32";
            int size = bf16 ? 2 : 4;
            foreach (var (key, _) in wanted)
            {
                var e = files.Entry(key);
                if (e.DType != dtype) { reason = $"tensor '{key}' is stored as {e.DType}, not the compute dtype {dtype}"; files.Dispose(); return null; }
                if (files.FileOffset(key) % size != 0) { reason = $"tensor '{key}' is not aligned to its element size in the file"; files.Dispose(); return null; }
            }
            if (extra.Count > 0) notice?.Invoke($"ignored {extra.Count} tensor(s) the model does not use: {string.Join(", ", extra.Take(5))}{(extra.Count > 5 ? ", …" : "")}");

            Gemv.Matrix M(string key)
            {
                var shape = files.Entry(key).Shape;
                return shape.Length == 1 ? new Gemv.Matrix(files.Address(key), 1, (int)shape[0], bf16) : new Gemv.Matrix(files.Address(key), (int)shape[0], (int)shape[1], bf16);
            }
            bool olmo = c.BlockType == BlockType.Olmo2;
            var blocks = new FastDecode.Block[c.NumHiddenLayers];
            for (int i = 0; i < blocks.Length; i++)
            {
                string p = $"model.layers.{i}.";
                Gemv.Matrix[] qkv = [M(p + "self_attn.q_proj.weight"), M(p + "self_attn.k_proj.weight"), M(p + "self_attn.v_proj.weight")];
                Gemv.Matrix[] gateUp = [M(p + "mlp.gate_proj.weight"), M(p + "mlp.up_proj.weight")];
                var o = M(p + "self_attn.o_proj.weight");
                var down = M(p + "mlp.down_proj.weight");
                // As FastDecoder builds them: Llama's norms are the input and post-attention ones, OLMo-2's those on the
                // attention and MLP outputs plus the q/k norms.
                blocks[i] = olmo
                    ? new FastDecode.Block(BlockType.Olmo2, qkv, o, gateUp, down, M(p + "post_attention_layernorm.weight"), M(p + "post_feedforward_layernorm.weight"),
                        M(p + "self_attn.q_norm.weight"), M(p + "self_attn.k_norm.weight"))
                    : new FastDecode.Block(BlockType.Llama, qkv, o, gateUp, down, M(p + "input_layernorm.weight"), M(p + "post_attention_layernorm.weight"));
            }
            var embedding = M("model.embed_tokens.weight");
            reason = "";
            return new MappedDecoder(c, files, blocks, embedding, M("model.norm.weight"), c.TieWordEmbeddings ? embedding : M("lm_head.weight"), bf16);
        }
        catch { files.Dispose(); throw; }
    }

    /// <summary>The tensors a <see cref="DecoderModel"/> of this config has, in its parameter order, with their shapes.</summary>
    static List<(string Key, long[] Shape)> Wanted(ModelConfig c)
    {
        long h = c.HiddenSize, q = (long)c.NumAttentionHeads * c.HeadDimension, kv = (long)c.KvHeads * c.HeadDimension, inter = c.IntermediateSize;
        bool olmo = c.BlockType == BlockType.Olmo2;
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [c.VocabSize, h]) };
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = $"model.layers.{i}.";
            list.Add((p + "self_attn.q_proj.weight", [q, h]));
            list.Add((p + "self_attn.k_proj.weight", [kv, h]));
            list.Add((p + "self_attn.v_proj.weight", [kv, h]));
            list.Add((p + "self_attn.o_proj.weight", [h, q]));
            if (olmo)
            {
                list.Add((p + "self_attn.q_norm.weight", [q]));
                list.Add((p + "self_attn.k_norm.weight", [kv]));
            }
            list.Add((p + "mlp.gate_proj.weight", [inter, h]));
            list.Add((p + "mlp.up_proj.weight", [inter, h]));
            list.Add((p + "mlp.down_proj.weight", [h, inter]));
            if (!olmo) list.Add((p + "input_layernorm.weight", [h]));
            list.Add((p + "post_attention_layernorm.weight", [h]));
            if (olmo) list.Add((p + "post_feedforward_layernorm.weight", [h]));
        }
        list.Add(("model.norm.weight", [h]));
        if (!c.TieWordEmbeddings) list.Add(("lm_head.weight", [c.VocabSize, h]));
        return list;
    }

    /// <summary>A generation's state: its KV cache and activation buffers. <see cref="Forward"/> feeds one token at a time.</summary>
    public sealed class Session : IDisposable
    {
        readonly MappedDecoder _m;
        readonly NativeKvCache _cache;
        readonly FastDecode.Workspace _work;
        readonly float[] _logits;

        internal Session(MappedDecoder m, int capacity)
        {
            _m = m;
            _cache = new NativeKvCache(m._blocks.Length, capacity);
            _work = new FastDecode.Workspace(1, m._shape);
            _logits = new float[m._head.Rows];
        }

        /// <summary>Positions fed so far.</summary>
        public int Length => _cache.Length;

        /// <summary>
        /// Feeds <paramref name="token"/> at the next position and returns the fp32 logits [V] for the token after it. The
        /// array is reused by the next call.
        /// </summary>
        public float[] Forward(int token)
        {
            var s = _m._shape;
            ReadOnlySpan<long> id = [token];
            var x = FastDecode.Embed(_m._embedding, id);
            var rows = FastDecode.Rows.Of(1, null, _cache.Length, s.InvFreq);
            for (int i = 0; i < _m._blocks.Length; i++) FastDecode.Step(x, _m._blocks[i], s, _cache, i, rows, _work);
            return Logits(x);
        }

        /// <summary>
        /// Feeds <paramref name="tokens"/> at the next positions (a prompt) and returns the logits after the last one: in
        /// passes of several rows (FastRows), which leave every logit and cache entry as feeding them one at a time
        /// through <see cref="Forward"/> would (FastDecode.MultiRowPrefill off: one at a time).
        /// </summary>
        public float[] Prompt(ReadOnlySpan<int> tokens)
        {
            if (tokens.Length == 0) throw new ArgumentException("a prompt needs at least one token", nameof(tokens));
            if (tokens.Length == 1 || !FastDecode.MultiRowPrefill)
            {
                foreach (int t in tokens) Forward(t);
                return _logits;
            }
            var ids = new long[tokens.Length];
            for (int i = 0; i < ids.Length; i++) ids[i] = tokens[i];
            return Logits(FastRows.Decoder(_m._blocks, _m._embedding, _m._shape, _cache, ids, _work));
        }

        unsafe float[] Logits(float[] hidden)
        {
            fixed (float* x = hidden, n = _work.Norm, y = _logits)
            {
                FastDecode.RmsNorm(x, n, _m._shape.Hidden, _m._norm, _m._shape.Eps);
                Gemv.ProductRows([_m._head], n, 1, y);
            }
            return _logits;
        }

        public void Dispose() => _cache.Dispose();
    }

    /// <summary>A generation with room for <paramref name="capacity"/> positions (more grow the cache).</summary>
    public Session Begin(int capacity) => new(this, capacity);

    /// <summary>
    /// The greedy continuation of <paramref name="prompt"/>: what <see cref="Generation.Generate"/> gives for one prompt
    /// with greedy sampling (the prompt checked the same way; a stop id ends it and is not emitted; at most
    /// <paramref name="maxNewTokens"/>). <paramref name="onToken"/> sees each token as it is produced.
    /// </summary>
    public unsafe List<int> Generate(int[] prompt, int maxNewTokens, IReadOnlyCollection<int>? stopIds = null, Action<int>? onToken = null,
        CancellationToken cancel = default)
    {
        Generation.CheckPrompts([prompt], VocabSize, MaxPositions, maxNewTokens);
        var stop = new HashSet<int>(stopIds ?? []);
        var output = new List<int>();
        using var session = Begin(prompt.Length + maxNewTokens);
        float[] logits = [];
        for (int step = 0; step < maxNewTokens; step++)
        {
            cancel.ThrowIfCancellationRequested();
            logits = step == 0 ? session.Prompt(prompt) : session.Forward(output[^1]);
            int next;
            fixed (float* l = logits) next = Greedy.Argmax(l, logits.Length);
            if (stop.Contains(next)) break;
            output.Add(next);
            onToken?.Invoke(next);
        }
        return output;
    }

    public void Dispose() => _files.Dispose();
}

/// <summary>
/// The KV cache of <see cref="MappedDecoder"/>: per slot, K and V buffers [batch, n_kv, capacity, d] in native memory
/// (pages become resident as they are written), grown by doubling as <see cref="KvCache"/> grows its tensors.
/// </summary>
internal sealed unsafe class NativeKvCache : IRawKvCache, IDisposable
{
    readonly IntPtr[] _k, _v;
    readonly int[] _fill, _capacity;
    readonly (long Batch, long KvHeads, long HeadDim, ScalarType DType)[] _layout;
    readonly int _capacityHint;

    public NativeKvCache(int slots, int capacityHint)
    {
        _k = new IntPtr[slots];
        _v = new IntPtr[slots];
        _fill = new int[slots];
        _capacity = new int[slots];
        _layout = new (long, long, long, ScalarType)[slots];
        _capacityHint = Math.Max(1, capacityHint);
    }

    public int Slots => _k.Length;
    public int Length => _fill.Length == 0 ? 0 : _fill[0];

    /// <summary>Only one-token steps write here (<see cref="AppendColumn"/>); the op-by-op forward uses <see cref="KvCache"/>.</summary>
    public (Tensor K, Tensor V) Append(int slot, Tensor k, Tensor v) =>
        throw new NotSupportedException("a native KV cache takes one-token steps of the fast decode path only");

    public (IntPtr K, IntPtr V, int Capacity, int Position) AppendColumn(int slot, long batch, long kvHeads, long headDim, ScalarType dtype)
    {
        if (slot < 0 || slot >= _k.Length) throw new ArgumentOutOfRangeException(nameof(slot), $"slot {slot} outside 0..{_k.Length - 1}");
        int fill = _fill[slot];
        if (_k[slot] != 0 && _layout[slot] != (batch, kvHeads, headDim, dtype))
            throw new InvalidOperationException($"KV cache slot {slot} holds [{_layout[slot].Batch}, {_layout[slot].KvHeads}, ·, {_layout[slot].HeadDim}] {_layout[slot].DType} entries; a one-token step asked for [{batch}, {kvHeads}, ·, {headDim}] {dtype}");
        if (_k[slot] == 0 || fill + 1 > _capacity[slot])
        {
            int cap = Math.Max(Math.Max(_capacityHint, fill + 1), _k[slot] == 0 ? 0 : _capacity[slot] * 2);
            long size = dtype == ScalarType.BFloat16 ? 2 : 4;
            _k[slot] = Grow(_k[slot], batch * kvHeads, _capacity[slot], cap, headDim * size, fill);
            _v[slot] = Grow(_v[slot], batch * kvHeads, _capacity[slot], cap, headDim * size, fill);
            _capacity[slot] = cap;
            _layout[slot] = (batch, kvHeads, headDim, dtype);
        }
        _fill[slot] = fill + 1;
        return (_k[slot], _v[slot], _capacity[slot], fill);
    }

    /// <summary>A buffer of <paramref name="heads"/> × <paramref name="capacity"/> rows of <paramref name="rowBytes"/>, holding the first <paramref name="fill"/> rows of each head of <paramref name="old"/>.</summary>
    static IntPtr Grow(IntPtr old, long heads, int oldCapacity, int capacity, long rowBytes, int fill)
    {
        var fresh = (byte*)NativeMemory.Alloc((nuint)(heads * capacity * rowBytes));
        if (old != 0)
        {
            for (long hd = 0; hd < heads; hd++)
                Buffer.MemoryCopy((byte*)old + hd * oldCapacity * rowBytes, fresh + hd * capacity * rowBytes, capacity * rowBytes, fill * rowBytes);
            NativeMemory.Free((void*)old);
        }
        return (IntPtr)fresh;
    }

    public void Dispose()
    {
        for (int i = 0; i < _k.Length; i++)
        {
            if (_k[i] != 0) NativeMemory.Free((void*)_k[i]);
            if (_v[i] != 0) NativeMemory.Free((void*)_v[i]);
            _k[i] = _v[i] = 0;
            _fill[i] = _capacity[i] = 0;
        }
    }
}
