using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Portico.Logging;

namespace Portico.Tests.Observability;

public sealed class BatchedConsoleLoggerProviderTests
{
    /// <summary>A stream that keeps what was written and can hold writers back, as a stalled reader of stdout does.</summary>
    private sealed class Sink : MemoryStream
    {
        public readonly ManualResetEventSlim Open = new(true);
        public int Writes;

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            Open.Wait();
            Interlocked.Increment(ref Writes);
            lock (this)
            {
                base.Write(buffer);
            }
        }

        public string Text()
        {
            lock (this)
            {
                return Encoding.UTF8.GetString(ToArray());
            }
        }
    }

    [Fact]
    public void AppendText_MatchesTheConsoleLoggersSingleLineFormat()
    {
        var buffer = new ArrayBufferWriter<byte>();
        var at = new DateTime(2026, 12, 6, 20, 54, 10, 84, DateTimeKind.Utc);

        BatchedConsoleLoggerProvider.AppendText(buffer, at, LogLevel.Information, "Portico.AccessLog", new EventId(2001), "id - 127.0.0.1 \"GET / HTTP/1.1\" 200", null);
        BatchedConsoleLoggerProvider.AppendText(buffer, at, LogLevel.Error, "Portico.AccessLog", new EventId(7), "two\nlines", new InvalidOperationException("boom"));

        var lines = Encoding.UTF8.GetString(buffer.WrittenSpan).Split('\n');
        Assert.Equal("2026-12-06T20:54:10.084Z info: Portico.AccessLog[2001] id - 127.0.0.1 \"GET / HTTP/1.1\" 200", lines[0]);
        Assert.StartsWith("2026-12-06T20:54:10.084Z fail: Portico.AccessLog[7] two lines System.InvalidOperationException: boom", lines[1]);
        Assert.Equal(3, lines.Length);   // one line each, and the final newline
    }

    [Fact]
    public void AppendJson_WritesTheConsoleLoggersJsonShapeWithTypedState()
    {
        var buffer = new ArrayBufferWriter<byte>();
        var state = new List<KeyValuePair<string, object?>>
        {
            new("request_id", "abc"), new("status", 502), new("bytes", 123L), new("duration_ms", 1.5), new("ok", true), new("none", null),
        };

        BatchedConsoleLoggerProvider.AppendJson(buffer, new DateTime(2026, 12, 6, 1, 2, 3, 4, DateTimeKind.Utc), LogLevel.Information,
            "Portico.AccessLog", new EventId(2001), "GET /x 502", null, state);

        var text = Encoding.UTF8.GetString(buffer.WrittenSpan);
        Assert.EndsWith("}\n", text);
        using var json = JsonDocument.Parse(text);
        var root = json.RootElement;
        Assert.Equal("2026-12-06T01:02:03.004Z", root.GetProperty("Timestamp").GetString());
        Assert.Equal(2001, root.GetProperty("EventId").GetInt32());
        Assert.Equal("Information", root.GetProperty("LogLevel").GetString());
        Assert.Equal("Portico.AccessLog", root.GetProperty("Category").GetString());
        Assert.Equal("GET /x 502", root.GetProperty("Message").GetString());
        var fields = root.GetProperty("State");
        Assert.Equal("GET /x 502", fields.GetProperty("Message").GetString());
        Assert.Equal("abc", fields.GetProperty("request_id").GetString());
        Assert.Equal(502, fields.GetProperty("status").GetInt32());
        Assert.Equal(123L, fields.GetProperty("bytes").GetInt64());
        Assert.Equal(1.5, fields.GetProperty("duration_ms").GetDouble());
        Assert.True(fields.GetProperty("ok").GetBoolean());
        Assert.Equal(JsonValueKind.Null, fields.GetProperty("none").ValueKind);
    }

    [Fact]
    public async Task Log_ManyLines_WrittenInOrderInFewWrites()
    {
        var sink = new Sink();
        using var provider = new BatchedConsoleLoggerProvider("Portico.AccessLog", json: false, sink);
        var logger = provider.CreateLogger("Portico.AccessLog");

        for (var i = 0; i < 1000; i++)
        {
            logger.LogInformation(new EventId(2001), "line {Number}", i);
        }
        // The writer thread writes the batch within its interval, without a flush from here.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (sink.Text().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length < 1000 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        var lines = sink.Text().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(1000, lines.Length);
        for (var i = 0; i < lines.Length; i++)
        {
            Assert.EndsWith($"info: Portico.AccessLog[2001] line {i}", lines[i]);
        }
        Assert.InRange(sink.Writes, 1, 10);
    }

    [Fact]
    public void CreateLogger_OtherCategory_WritesNothing()
    {
        var sink = new Sink();
        using var provider = new BatchedConsoleLoggerProvider("Portico.AccessLog", json: false, sink);

        provider.CreateLogger("Portico").LogWarning("not mine");
        provider.Flush();

        Assert.Equal("", sink.Text());
    }

    [Fact]
    public void Log_OutputStalled_DropsPastTheLimitWithoutBlockingAndReportsTheCount()
    {
        var sink = new Sink();
        using var provider = new BatchedConsoleLoggerProvider("Portico.AccessLog", json: false, sink);
        var logger = provider.CreateLogger("Portico.AccessLog");
        sink.Open.Reset();
        var line = new string('x', 1000);

        // The writer thread takes the first batch and blocks in Write; the rest piles up to the limit, then drops.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (var i = 0; i < 12_000; i++)
        {
            logger.LogInformation("{Line}", line);
            if (i == 0)
            {
                Thread.Sleep(300);
            }
        }
        clock.Stop();
        Assert.True(provider.Dropped > 0, "nothing was dropped");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"logging blocked for {clock.Elapsed}");

        sink.Open.Set();
        provider.Flush();
        Assert.Contains("access log lines dropped: standard output did not keep up", sink.Text());
        Assert.Equal(0, provider.Dropped);
    }
}
