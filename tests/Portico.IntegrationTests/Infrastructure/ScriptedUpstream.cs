using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// A raw TCP HTTP/1.1 "upstream" whose answers are exact bytes chosen by a callback, for wire-level tests of how the
/// gateway reads upstream responses (odd framing, interim responses, malformed heads, early closes). On each
/// connection it reads request heads (up to CRLFCRLF, plus a Content-Length body if any; 256 KiB at most), records
/// each with the number of the connection it came on, and writes the callback's <see cref="ScriptedReply"/>. Nothing
/// is parsed or fixed up on the way out: what the callback returns is what goes on the wire.
/// </summary>
public sealed class ScriptedUpstream : TcpTestUpstream
{
    private readonly Func<ScriptedRequest, ScriptedReply> _reply;
    private readonly ConcurrentQueue<ScriptedRequest> _requests = new();
    private int _inFlight;
    private int _maxInFlight;

    private ScriptedUpstream(Func<ScriptedRequest, ScriptedReply> reply)
    {
        _reply = reply;
        StartAccepting();
    }

    /// <summary>The most requests that were being answered at one moment (head read, reply not yet written).</summary>
    public int MaxConcurrentRequests => Volatile.Read(ref _maxInFlight);

    /// <summary>Every request head read so far, in arrival order.</summary>
    public IReadOnlyList<ScriptedRequest> Requests => [.. _requests];

    public static ScriptedUpstream Start(Func<ScriptedRequest, ScriptedReply> reply) => new(reply);

    protected override async Task ServeAsync(TcpClient client, int connection)
    {
        var buffer = new byte[256 * 1024];
        var filled = 0;
        try
        {
            var stream = client.GetStream();
            for (var index = 1; ; index++)
            {
                int headEnd;
                while ((headEnd = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8)) < 0)
                {
                    var read = await stream.ReadAsync(buffer.AsMemory(filled), Stopping);
                    if (read == 0)
                    {
                        return;
                    }
                    filled += read;
                }
                var head = Encoding.Latin1.GetString(buffer, 0, headEnd);
                var request = new ScriptedRequest(connection, index, head, []);
                var consumed = headEnd + 4 + (int)(long.TryParse(request.Header("Content-Length"), NumberStyles.None, CultureInfo.InvariantCulture, out var length) ? length : 0);
                while (filled < consumed)
                {
                    var read = await stream.ReadAsync(buffer.AsMemory(filled), Stopping);
                    if (read == 0)
                    {
                        return;
                    }
                    filled += read;
                }
                request = request with { Body = buffer[(headEnd + 4)..consumed] };
                Buffer.BlockCopy(buffer, consumed, buffer, 0, filled - consumed);
                filled -= consumed;
                _requests.Enqueue(request);

                var reply = _reply(request);
                var inFlight = Interlocked.Increment(ref _inFlight);
                for (var max = Volatile.Read(ref _maxInFlight); inFlight > max; max = Volatile.Read(ref _maxInFlight))
                {
                    Interlocked.CompareExchange(ref _maxInFlight, inFlight, max);
                }
                try
                {
                    await Task.Delay(reply.Delay, Stopping);
                    for (var i = 0; i < reply.Pieces.Count; i++)
                    {
                        if (i > 0)
                        {
                            await Task.Delay(reply.Pause, Stopping);
                        }
                        await stream.WriteAsync(reply.Pieces[i], Stopping);
                    }
                }
                finally
                {
                    Interlocked.Decrement(ref _inFlight);
                }
                if (reply.CloseAfter is { } closeAfter)
                {
                    await Task.Delay(closeAfter, Stopping);
                    return;
                }
            }
        }
        catch (Exception)
        {
            // The gateway closed or reset the connection, or the upstream is stopping: nothing to report.
        }
        finally
        {
            client.Close();
        }
    }
}

/// <summary>
/// One request as the upstream read it: the <paramref name="Connection"/> number (1 = first accepted), its
/// position on that connection (<paramref name="Index"/>, 1 = first request), the raw head without the final
/// CRLFCRLF, and the Content-Length body.
/// </summary>
public sealed record ScriptedRequest(int Connection, int Index, string Head, byte[] Body)
{
    /// <summary>The request line, e.g. <c>GET /x HTTP/1.1</c>.</summary>
    public string RequestLine => Head.Split("\r\n")[0];

    /// <summary>The request target: path and query exactly as sent.</summary>
    public string Target => RequestLine.Split(' ')[1];

    /// <summary>Header fields in wire order, names in the case they were sent.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Fields =>
        [.. Head.Split("\r\n").Skip(1).Select(static line => line.Split(':', 2)).Where(static p => p.Length == 2).Select(static p => KeyValuePair.Create(p[0], p[1].Trim()))];

    /// <summary>The first value of the header (name compared case-insensitively), or null.</summary>
    public string? Header(string name) => Fields.FirstOrDefault(f => f.Key.Equals(name, StringComparison.OrdinalIgnoreCase)).Value;
}

/// <summary>
/// What the upstream writes for one request: <see cref="Pieces"/> in order, each a separate write, with
/// <see cref="Pause"/> between them, after waiting <see cref="Delay"/>. <see cref="CloseAfter"/> null keeps the
/// connection open for the next request; otherwise the connection is closed that long after the last write.
/// </summary>
public sealed record ScriptedReply(IReadOnlyList<byte[]> Pieces)
{
    public TimeSpan Delay { get; init; }

    public TimeSpan Pause { get; init; }

    public TimeSpan? CloseAfter { get; init; }

    /// <summary>A reply from text pieces, each written as Latin-1 bytes.</summary>
    public static ScriptedReply Of(params string[] pieces) => new([.. pieces.Select(Encoding.Latin1.GetBytes)]);
}
