namespace Recur.Serving;

/// <summary>
/// Serialises all model work onto one dedicated thread: one forward at a time, in arrival order.
/// Non-streaming greedy requests without a seed that wait in the queue together and share T are run as
/// one batch (at most <c>maxBatch</c> rows, and only while the longest prompt plus the longest reply fits
/// the context): greedy decoding draws no samples, so batching cannot change what a seed would reproduce. (A
/// recurrent model with σ &gt; 0 still draws its initial state s_0 from a generator; a batch draws one s_0 per row
/// from the worker's stream, so such results depend on the batch they ran in, as they would on request order.) A failing batch fails only its own requests; the thread keeps serving.
/// </summary>
public sealed class ModelWorker : IDisposable
{
    sealed class Item(TextRequest request, Action<string>? onText, bool batchable, CancellationToken cancel, Action<CancellationToken>? job = null)
    {
        public TextRequest Request { get; } = request;
        /// <summary>Work other than one generation (a request with several prompts, prompt scoring); runs alone.</summary>
        public Action<CancellationToken>? Job { get; } = job;
        public Action<string>? OnText { get; } = onText;
        public bool Batchable { get; } = batchable;
        public CancellationToken Cancel { get; } = cancel;
        public TaskCompletionSource<TextResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    readonly ModelRunner _runner;
    readonly int _maxBatch, _maxQueue;
    readonly LinkedList<Item> _queue = new();
    readonly Thread _thread;
    readonly CancellationTokenSource _shutdown = new();
    readonly Action<string>? _log;
    bool _stopped;

    public ModelWorker(ModelRunner runner, int maxBatch = 4, int maxQueue = 64, Action<string>? log = null)
    {
        if (maxBatch < 1) throw RecurUserException.About($"ServerOptions.MaxBatch must be ≥ 1 (got {maxBatch})", "ServerOptions.MaxBatch");
        _runner = runner;
        _maxBatch = maxBatch;
        _maxQueue = Math.Max(1, maxQueue);
        _log = log;
        _thread = new Thread(Loop) { IsBackground = true, Name = "recur-model-worker" };
        _thread.Start();
    }

    /// <summary>Requests waiting (not counting the batch running now).</summary>
    public int Pending { get { lock (_queue) return _queue.Count; } }

    /// <summary>
    /// Queues a request. Streaming requests pass <paramref name="onText"/> (called on the worker thread) and are
    /// never batched. Throws <see cref="ApiException"/> 503 when the queue is full or the worker is stopping.
    /// </summary>
    public Task<TextResult> Enqueue(TextRequest request, Action<string>? onText = null, CancellationToken cancel = default)
    {
        bool batchable = onText is null && request.Sampling.Greedy && request.Sampling.Seed is null;
        var item = new Item(request, onText, batchable, cancel);
        lock (_queue)
        {
            if (_stopped) throw new ApiException(503, "the server is shutting down", "server_error");
            if (_queue.Count >= _maxQueue) throw new ApiException(503, $"the server is busy: {_queue.Count} requests are waiting; retry later", "server_error");
            _queue.AddLast(item);
            Monitor.Pulse(_queue);
        }
        return item.Done.Task;
    }

    /// <summary>
    /// Queues <paramref name="job"/> to run alone on the worker thread, in arrival order with the generation requests,
    /// taking one place in the queue. It receives a token cancelled by <paramref name="cancel"/> or shutdown, and may
    /// call the runner as often as it needs. A <see cref="RecurUserException"/> from it becomes a 400, anything else a 500.
    /// </summary>
    public Task<T> EnqueueJob<T>(Func<CancellationToken, T> job, CancellationToken cancel = default)
    {
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var item = new Item(new TextRequest([], 0, new()), null, batchable: false, cancel, token =>
        {
            try { done.TrySetResult(job(token)); }
            catch (OperationCanceledException) { done.TrySetCanceled(); }
            catch (ApiException e) { done.TrySetException(e); }
            catch (RecurUserException e) { done.TrySetException(new ApiException(400, e.Message)); }
            catch (Exception e)
            {
                _log?.Invoke($"error: generation failed: {e.GetType().Name}: {e.Message}");
                done.TrySetException(new ApiException(500, $"internal error during generation: {e.GetType().Name}: {e.Message}", "server_error"));
            }
        });
        // The item's own completion source reports a job dropped before it ran (cancelled, or failed at shutdown).
        _ = item.Done.Task.ContinueWith(t =>
        {
            if (t.IsCanceled) done.TrySetCanceled();
            else if (t.Exception?.InnerException is { } e) done.TrySetException(e);
        }, TaskScheduler.Default);
        lock (_queue)
        {
            if (_stopped) throw new ApiException(503, "the server is shutting down", "server_error");
            if (_queue.Count >= _maxQueue) throw new ApiException(503, $"the server is busy: {_queue.Count} requests are waiting; retry later", "server_error");
            _queue.AddLast(item);
            Monitor.Pulse(_queue);
        }
        return done.Task;
    }

    void Loop()
    {
        while (true)
        {
            List<Item> batch;
            lock (_queue)
            {
                while (_queue.Count == 0 && !_stopped) Monitor.Wait(_queue);
                if (_stopped && _queue.Count == 0) return;
                batch = TakeBatch();
            }
            Run(batch);
        }
    }

    // Called under the lock: the oldest request, plus compatible batchable requests behind it.
    List<Item> TakeBatch()
    {
        var first = _queue.First!.Value;
        _queue.RemoveFirst();
        var batch = new List<Item> { first };
        if (!first.Batchable) return batch;
        int? t = _runner.EffectiveRecurrences(first.Request);
        int longestPrompt = first.Request.PromptIds.Length, longestReply = first.Request.MaxTokens;
        for (var node = _queue.First; node is not null && batch.Count < _maxBatch;)
        {
            var next = node.Next;
            var r = node.Value.Request;
            if (node.Value.Batchable && r.Sampling == first.Request.Sampling && _runner.EffectiveRecurrences(r) == t
                && (long)Math.Max(longestPrompt, r.PromptIds.Length) + Math.Max(longestReply, r.MaxTokens) <= _runner.ContextLength)
            {
                batch.Add(node.Value);
                longestPrompt = Math.Max(longestPrompt, r.PromptIds.Length);
                longestReply = Math.Max(longestReply, r.MaxTokens);
                _queue.Remove(node);
            }
            node = next;
        }
        return batch;
    }

    void Run(List<Item> batch)
    {
        batch.RemoveAll(i =>
        {
            if (!i.Cancel.IsCancellationRequested) return false;
            i.Done.TrySetCanceled(i.Cancel);
            return true;
        });
        if (batch.Count == 0) return;
        if (batch[0].Job is { } job)
        {
            using var jobCancel = CancellationTokenSource.CreateLinkedTokenSource(_shutdown.Token, batch[0].Cancel);
            job(jobCancel.Token);
            batch[0].Done.TrySetResult(new TextResult("", 0, 0, "stop"));
            return;
        }
        // A batch stops when shutdown cancels it or when every one of its requests is cancelled (clients gone,
        // deadlines passed); until then the remaining rows still need it.
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_shutdown.Token);
        int live = batch.Count;
        var registrations = batch.Select(i => i.Cancel.Register(() =>
        {
            if (Interlocked.Decrement(ref live) == 0) try { linked.Cancel(); } catch (ObjectDisposedException) { }
        })).ToList();
        if (batch.Count > 1) _log?.Invoke($"batching {batch.Count} requests");
        try
        {
            var results = _runner.Run(batch.Select(i => i.Request).ToList(),
                onText: (row, text) => batch[row].OnText?.Invoke(text), linked.Token);
            for (int i = 0; i < batch.Count; i++) batch[i].Done.TrySetResult(results[i]);
        }
        catch (OperationCanceledException)
        {
            foreach (var i in batch) i.Done.TrySetCanceled();
        }
        catch (RecurUserException e)
        {
            foreach (var i in batch) i.Done.TrySetException(new ApiException(400, e.Message));
        }
        catch (Exception e)
        {
            _log?.Invoke($"error: generation failed: {e.GetType().Name}: {e.Message}");
            foreach (var i in batch) i.Done.TrySetException(new ApiException(500, $"internal error during generation: {e.GetType().Name}: {e.Message}", "server_error"));
        }
        finally
        {
            foreach (var r in registrations) r.Dispose();
        }
    }

    /// <summary>
    /// Stops taking requests. Queued requests still run unless <paramref name="cancelRunning"/>, which also
    /// cancels the batch in progress. Waits for the worker thread up to <paramref name="timeout"/>.
    /// </summary>
    public bool Stop(bool cancelRunning, TimeSpan timeout)
    {
        lock (_queue)
        {
            _stopped = true;
            if (cancelRunning)
            {
                foreach (var i in _queue) i.Done.TrySetException(new ApiException(503, "the server is shutting down", "server_error"));
                _queue.Clear();
            }
            Monitor.PulseAll(_queue);
        }
        if (cancelRunning) _shutdown.Cancel();
        return _thread.Join(timeout);
    }

    /// <summary>How long <see cref="Dispose"/> waits before it warns that a step is still running (tests shorten it).</summary>
    internal TimeSpan StopWarning { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Cancels the batch in progress and every queued request, and returns only once the worker thread has ended.
    /// </summary>
    /// <remarks>
    /// The owner frees the model (its weights, a KV cache) right after this returns, so the worker must be done with
    /// them: cancellation ends a generation between steps, not inside one, and a forward in flight would otherwise go
    /// on reading freed tensors (a use after free inside libtorch, not an exception). A long step (a prefill of a large
    /// model) is waited for, with a warning.
    /// </remarks>
    public void Dispose()
    {
        // From a callback on the worker thread itself there is nothing to wait for: the loop ends after this batch.
        if (Thread.CurrentThread == _thread)
        {
            Stop(cancelRunning: true, TimeSpan.Zero);
            return;
        }
        if (!Stop(cancelRunning: true, StopWarning))
        {
            _log?.Invoke($"warning: the model worker is still in a step after {StopWarning.TotalSeconds:0} s; waiting for it to end before the model is freed");
            _thread.Join();
        }
        _shutdown.Dispose();
    }
}
