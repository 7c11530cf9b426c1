using System.Diagnostics;
using System.Globalization;

namespace Portico.Observability.Metrics;

/// <summary>
/// Process and .NET runtime metrics, read at scrape time (nothing is recorded per request). Names follow the
/// Prometheus client libraries' standard process metrics (<c>process_*</c>, no prefix, so stock dashboards work) and
/// a <c>dotnet_</c> group for the garbage collector and thread pool.
/// </summary>
public sealed class ProcessMetrics : IMetricCollector
{
    /// <summary>The family names this collector writes (some only on Linux).</summary>
    public static readonly string[] FamilyNames =
    [
        "process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds", "process_open_fds",
        "process_max_fds", "dotnet_gc_heap_size_bytes", "dotnet_gc_allocated_bytes_total", "dotnet_gc_collections_total",
        "dotnet_gc_pause_seconds_total", "dotnet_threadpool_threads", "dotnet_threadpool_queue_length",
        "dotnet_threadpool_completed_items_total",
    ];

    private static readonly string[] GenerationLabel = ["generation"];
    private static readonly string[] Generations = ["0", "1", "2"];

    private readonly double _startTimeSeconds;

    public ProcessMetrics()
    {
        using var process = Process.GetCurrentProcess();
        _startTimeSeconds = (process.StartTime.ToUniversalTime() - DateTime.UnixEpoch).TotalSeconds;
    }

    /// <inheritdoc/>
    public void Collect(PrometheusTextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        Single(writer, "process_cpu_seconds_total", "Total user and system CPU time spent, in seconds.", MetricType.Counter,
            Environment.CpuUsage.TotalTime.TotalSeconds);
        Single(writer, "process_resident_memory_bytes", "Resident memory size in bytes.", MetricType.Gauge, Environment.WorkingSet);
        Single(writer, "process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds.", MetricType.Gauge,
            _startTimeSeconds);
        if (OperatingSystem.IsLinux())
        {
            if (CountOpenFds() is { } open)
            {
                Single(writer, "process_open_fds", "Number of open file descriptors.", MetricType.Gauge, open);
            }
            if (ReadMaxFds() is { } max)
            {
                Single(writer, "process_max_fds", "Maximum number of open file descriptors.", MetricType.Gauge, max);
            }
        }

        Single(writer, "dotnet_gc_heap_size_bytes", "Bytes in use on the managed heap (allocated and not known to be free).", MetricType.Gauge,
            GC.GetTotalMemory(forceFullCollection: false));
        Single(writer, "dotnet_gc_allocated_bytes_total", "Bytes allocated on the managed heap since the process started.", MetricType.Counter,
            GC.GetTotalAllocatedBytes());
        writer.WriteFamilyHeader("dotnet_gc_collections_total", "Garbage collections since the process started, by generation.", MetricType.Counter);
        for (var generation = 0; generation < Generations.Length; generation++)
        {
            writer.WriteSample("dotnet_gc_collections_total", GenerationLabel, [Generations[generation]], GC.CollectionCount(generation));
        }
        Single(writer, "dotnet_gc_pause_seconds_total", "Time the runtime was paused for garbage collection, in seconds.", MetricType.Counter,
            GC.GetTotalPauseDuration().TotalSeconds);
        Single(writer, "dotnet_threadpool_threads", "Thread pool threads.", MetricType.Gauge, ThreadPool.ThreadCount);
        Single(writer, "dotnet_threadpool_queue_length", "Work items queued to the thread pool and not started yet.", MetricType.Gauge,
            ThreadPool.PendingWorkItemCount);
        Single(writer, "dotnet_threadpool_completed_items_total", "Work items the thread pool has completed.", MetricType.Counter,
            ThreadPool.CompletedWorkItemCount);
    }

    private static void Single(PrometheusTextWriter writer, string name, string help, MetricType type, double value)
    {
        writer.WriteFamilyHeader(name, help, type);
        writer.WriteSample(name, [], [], value);
    }

    private static long? CountOpenFds()
    {
        try
        {
            var count = 0L;
            foreach (var _ in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
            {
                count++;
            }
            // The enumeration itself holds one descriptor open on the directory.
            return Math.Max(0, count - 1);
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static long? ReadMaxFds()
    {
        try
        {
            // "Max open files            1048576              1048576              files"
            foreach (var line in File.ReadLines("/proc/self/limits"))
            {
                if (line.StartsWith("Max open files", StringComparison.Ordinal))
                {
                    var fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    return fields.Length > 0 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var soft) ? soft : null;
                }
            }
            return null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
