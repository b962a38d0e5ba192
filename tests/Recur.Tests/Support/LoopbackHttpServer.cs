using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Recur.Tests.Support;

/// <summary>A request as the stand-in server saw it; header names are lower-case.</summary>
sealed record SeenRequest(string Method, string Path, IReadOnlyDictionary<string, string> Headers);

/// <summary>
/// What to answer. <see cref="DropAfter"/> sends the headers (with the full Content-Length) and only that many
/// body bytes, then closes the connection: an interrupted transfer.
/// </summary>
sealed record CannedReply(int Status, byte[] Body, IReadOnlyDictionary<string, string>? Headers = null, int? DropAfter = null)
{
    public static CannedReply Text(int status, string body, IReadOnlyDictionary<string, string>? headers = null) => new(status, Encoding.UTF8.GetBytes(body), headers);
}

/// <summary>
/// A minimal HTTP/1.1 server on 127.0.0.1 (a free port) for client tests: one request per connection, no
/// request bodies, answers from a handler. Never reachable from outside the machine.
/// </summary>
sealed class LoopbackHttpServer : IDisposable
{
    readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    readonly Func<SeenRequest, CannedReply> _handler;
    readonly CancellationTokenSource _stop = new();
    readonly Task _loop;
    readonly List<SeenRequest> _seen = [];

    public LoopbackHttpServer(Func<SeenRequest, CannedReply> handler)
    {
        _handler = handler;
        _listener.Start();
        BaseAddress = new Uri($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}");
        _loop = Task.Run(Loop);
    }

    public Uri BaseAddress { get; }

    public IReadOnlyList<SeenRequest> Requests { get { lock (_seen) return [.. _seen]; } }

    async Task Loop()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(() => Serve(client));
        }
    }

    async Task Serve(TcpClient client)
    {
        using var _ = client;
        try
        {
            var stream = client.GetStream();
            stream.ReadTimeout = 10_000;
            var head = new StringBuilder();
            var one = new byte[1];
            while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal))
            {
                if (await stream.ReadAsync(one) == 0 || head.Length > 65536) return;
                head.Append((char)one[0]);
            }
            var lines = head.ToString().Split("\r\n");
            var first = lines[0].Split(' ');
            var headers = new Dictionary<string, string>();
            foreach (var l in lines.Skip(1).Where(l => l.Contains(':')))
                headers[l[..l.IndexOf(':')].Trim().ToLowerInvariant()] = l[(l.IndexOf(':') + 1)..].Trim();
            var request = new SeenRequest(first[0], first[1], headers);
            lock (_seen) _seen.Add(request);

            var reply = _handler(request);
            var sb = new StringBuilder($"HTTP/1.1 {reply.Status} {Reason(reply.Status)}\r\n");
            sb.Append($"Content-Length: {reply.Body.Length}\r\nConnection: close\r\n");
            foreach (var (k, v) in reply.Headers ?? new Dictionary<string, string>()) sb.Append($"{k}: {v}\r\n");
            sb.Append("\r\n");
            await stream.WriteAsync(Encoding.ASCII.GetBytes(sb.ToString()));
            if (reply.DropAfter is int n)
            {
                await stream.WriteAsync(reply.Body.AsMemory(0, n));
                await stream.FlushAsync();
                // Close early but cleanly (FIN, not RST, which could make the client drop bytes it has not read
                // yet): the client gets exactly n bytes, then the end of a body shorter than its Content-Length.
                client.Client.Shutdown(SocketShutdown.Send);
                client.Client.Close();
                return;
            }
            await stream.WriteAsync(reply.Body);
            await stream.FlushAsync();
        }
        catch (IOException) { }
        catch (SocketException) { }
        catch (ObjectDisposedException) { }
    }

    static string Reason(int status) => status switch
    {
        200 => "OK", 206 => "Partial Content", 302 => "Found", 401 => "Unauthorized", 403 => "Forbidden",
        404 => "Not Found", 416 => "Range Not Satisfiable", 503 => "Service Unavailable", _ => "Status",
    };

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        try { _loop.Wait(TimeSpan.FromSeconds(5)); } catch (AggregateException) { }
        _stop.Dispose();
    }
}
