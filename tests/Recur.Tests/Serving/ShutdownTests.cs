using Recur.Checkpoints;
using Recur.Engine;
using Recur.Model;
using Recur.Serving;
using Recur.Tests.Support;
using Recur.Tokenization;
using Xunit;
using static TorchSharp.torch;

namespace Recur.Tests.Serving;

/// <summary>
/// Shutting down while a generation is in flight: the model is freed by its owner right after the worker (and with it
/// the server, OpenAiServer.Dispose) is disposed, so disposal must not return while a forward still runs on the worker thread.
/// </summary>
public sealed class ShutdownTests
{
    /// <summary>A real model whose forward waits at a gate (a step that takes long and cannot be cancelled, like a big prefill).</summary>
    sealed class Gated(ICausalLM inner) : DelegatingModel(inner, ownsInner: true)
    {
        public ManualResetEventSlim Entered { get; } = new();
        public ManualResetEventSlim Gate { get; } = new();
        int _running;
        public bool Running => Volatile.Read(ref _running) != 0;

        public override Tensor Forward(Tensor inputIds, Tensor? keyPadding = null, IKvCache? cache = null, bool lastOnly = false)
        {
            Volatile.Write(ref _running, 1);
            try
            {
                Entered.Set();
                Gate.Wait(TimeSpan.FromSeconds(60));
                return Inner.Forward(inputIds, keyPadding, cache, lastOnly);
            }
            finally { Volatile.Write(ref _running, 0); }
        }
    }

    static (Gated Model, ITokenizer Tokenizer, ModelRunner Runner) Load()
    {
        string dir = ChatModels.Plain();
        var tok = TokenizerLoader.Load(dir);
        var model = new Gated(ModelLoader.Load(dir, ScalarType.Float32, CPU));
        return (model, tok, new ModelRunner(model, tok));
    }

    [Fact]
    public async Task Disposing_the_worker_waits_for_the_forward_in_flight_before_the_model_can_be_freed()
    {
        var (model, tok, runner) = Load();
        using var _ = tok;
        using var __ = model;
        var log = new List<string>();
        // The warning comes after 0.2 s here (30 s in the server); before the fix Dispose returned then, with the forward
        // still running, and its owner freed the weights under it.
        var worker = new ModelWorker(runner, log: s => { lock (log) log.Add(s); }) { StopWarning = TimeSpan.FromMilliseconds(200) };
        var pending = worker.Enqueue(new TextRequest([1, 5, 6], 4, new SamplingOptions()));
        Assert.True(model.Entered.Wait(TimeSpan.FromSeconds(30)), "the forward never started");

        var disposing = Task.Run(worker.Dispose);
        await Task.Delay(1500);
        bool returnedEarly = disposing.IsCompleted;
        bool stillRunning = model.Running;
        model.Gate.Set();
        await disposing.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(stillRunning, "the forward was not in flight: the test did not exercise shutdown during a step");
        Assert.False(returnedEarly, "ModelWorker.Dispose returned while a forward was still running on the worker thread");
        Assert.False(model.Running);
        // The request in flight is cancelled (shutdown cancels the running batch), not left hanging.
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending.WaitAsync(TimeSpan.FromSeconds(30)));
        lock (log) Assert.Contains(log, l => l.Contains("still in a step", StringComparison.Ordinal));
    }
}
