using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Portico.Tests.Observability;

/// <summary>Keeps every log entry (category, event id, message and structured state) for assertions.</summary>
internal sealed class CapturingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<CapturedEntry> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new CapturingLogger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class CapturingLogger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var properties = new Dictionary<string, object?>(StringComparer.Ordinal);
            if (state is IReadOnlyCollection<KeyValuePair<string, object?>> pairs)
            {
                foreach (var (key, value) in pairs)
                {
                    properties[key] = value;
                }
            }
            owner.Entries.Enqueue(new CapturedEntry(category, eventId.Id, logLevel, formatter(state, exception), properties));
        }
    }
}

internal sealed record CapturedEntry(string Category, int EventId, LogLevel Level, string Message, IReadOnlyDictionary<string, object?> Properties);
