namespace Recur.Tests.Support;

/// <summary>
/// A thread that runs a gen-0 collection and drains the finalizer queue every millisecond until disposed: an object
/// that nothing references any more is finalized within a millisecond, so a TorchSharp Tensor or Scalar whose last
/// reference died before its libtorch call ended is freed while libtorch still reads it. It reaches every thread of the
/// process, so tests that use it run in <see cref="ProcessSwitchesCollection"/>.
/// </summary>
sealed class Collector : IDisposable
{
    readonly CancellationTokenSource _stop = new();
    readonly Thread _thread;

    public Collector()
    {
        _thread = new Thread(() =>
        {
            while (!_stop.IsCancellationRequested)
            {
                GC.Collect(0);
                GC.WaitForPendingFinalizers();
                Thread.Sleep(1);
            }
        }) { IsBackground = true, Name = "test-collector" };
        _thread.Start();
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join();
        _stop.Dispose();
    }
}
