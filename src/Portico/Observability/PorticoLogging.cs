using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using Portico.Config;

namespace Portico.Logging;

/// <summary>
/// Builds the logger factory from <c>logging:</c> and the <c>PORTICO_LOG</c> environment variable, which works
/// like RUST_LOG: a level ("debug"), optionally followed by per-category levels
/// ("info,Portico.Proxy=debug,Portico.AccessLog=warn"). The variable wins over the file.
/// </summary>
public static class PorticoLogging
{
    /// <summary>ASP.NET Core's per-request hosting log category.</summary>
    internal const string HostingDiagnosticsCategory = "Microsoft.AspNetCore.Hosting.Diagnostics";

    /// <summary>The access log's category: written in batches by <see cref="BatchedConsoleLoggerProvider"/>.</summary>
    internal const string AccessLogCategory = "Portico.AccessLog";

    public static ILoggerFactory CreateFactory(LoggingConfig config)
    {
        var spec = Environment.GetEnvironmentVariable("PORTICO_LOG");
        if (string.IsNullOrWhiteSpace(spec))
        {
            spec = config.Level;
        }
        return LoggerFactory.Create(builder =>
        {
            var parts = spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            builder.SetMinimumLevel(LogLevel.Information);
            // ASP.NET Core's hosting starts an Activity for every request whenever this category is enabled at any
            // level (it checks Critical), and "Microsoft" at warning enables it: an allocation per request that
            // nothing reads, and an unexported parent that Portico's own span must not hang under. Its own lines
            // ("Request starting/finished") are debug and information anyway. Added before PORTICO_LOG's rules, so
            // naming the category there (same length, later rule) turns it back on.
            builder.AddFilter(HostingDiagnosticsCategory, LogLevel.None);
            foreach (var part in parts)
            {
                var eq = part.IndexOf('=');
                if (eq < 0)
                {
                    builder.SetMinimumLevel(ParseLevel(part) ?? LogLevel.Information);
                }
                else if (ParseLevel(part[(eq + 1)..]) is { } level)
                {
                    builder.AddFilter(part[..eq], level);
                }
            }
            // ASP.NET's own chatter stays at warning unless asked for by category.
            builder.AddFilter("Microsoft", LogLevel.Warning);
            var json = string.Equals(config.Format, "json", StringComparison.OrdinalIgnoreCase);
            // The access log, the one category written per request, goes out in batches in the console logger's own
            // formats; the console logger itself leaves it alone (a provider's own rule wins over PORTICO_LOG's).
            builder.AddProvider(new BatchedConsoleLoggerProvider(AccessLogCategory, json));
            builder.AddFilter<ConsoleLoggerProvider>(AccessLogCategory, LogLevel.None);
            if (json)
            {
                builder.AddJsonConsole(o =>
                {
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.UseUtcTimestamp = true;
                    o.IncludeScopes = false;
                });
            }
            else
            {
                builder.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ ";
                    o.UseUtcTimestamp = true;
                    o.ColorBehavior = LoggerColorBehavior.Disabled;
                });
            }
        });
    }

    /// <summary>Parses trace|debug|info|information|warn|warning|error|critical|none|off.</summary>
    public static LogLevel? ParseLevel(string value) => value.Trim().ToLowerInvariant() switch
    {
        "trace" => LogLevel.Trace,
        "debug" => LogLevel.Debug,
        "info" or "information" => LogLevel.Information,
        "warn" or "warning" => LogLevel.Warning,
        "error" => LogLevel.Error,
        "critical" or "fatal" => LogLevel.Critical,
        "none" or "off" => LogLevel.None,
        _ => null,
    };
}
