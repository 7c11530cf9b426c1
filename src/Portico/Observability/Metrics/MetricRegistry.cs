using System.Buffers;

namespace Portico.Observability.Metrics;

/// <summary>
/// The families one endpoint exposes, written in the order they were added. Adding takes a lock; recording never
/// touches the registry (the code that records holds its cells).
/// </summary>
public sealed class MetricRegistry
{
    private readonly Lock _gate = new();
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private IMetricCollector[] _collectors = [];

    /// <summary>Adds a family; throws when a family of that name is already there (the format allows one per name).</summary>
    public T Add<T>(T family)
        where T : MetricFamily
    {
        ArgumentNullException.ThrowIfNull(family);
        AddCollector(family, family.Name);
        return family;
    }

    /// <summary>
    /// Adds a collector that writes values read at scrape time; <paramref name="familyNames"/> are the families it
    /// writes, reserved so that no other family can take them.
    /// </summary>
    public void AddCollector(IMetricCollector collector, params string[] familyNames)
    {
        ArgumentNullException.ThrowIfNull(collector);
        lock (_gate)
        {
            ReserveLocked(familyNames);
            _collectors = [.. _collectors, collector];
        }
    }

    /// <summary>Reserves names of families written outside the registry (in the same scrape), so none is added twice.</summary>
    public void Reserve(params string[] familyNames)
    {
        lock (_gate)
        {
            ReserveLocked(familyNames);
        }
    }

    private void ReserveLocked(string[] familyNames)
    {
        ArgumentNullException.ThrowIfNull(familyNames);
        foreach (var name in familyNames)
        {
            MetricNames.ValidateMetricName(name);
            if (_names.Contains(name))
            {
                throw new ArgumentException($"a metric family named '{name}' is already registered", nameof(familyNames));
            }
        }
        foreach (var name in familyNames)
        {
            _names.Add(name);
        }
    }

    /// <summary>Writes every family in the text format.</summary>
    public void Collect(PrometheusTextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        foreach (var collector in Volatile.Read(ref _collectors))
        {
            collector.Collect(writer);
        }
    }

    /// <summary>Writes every family as UTF-8 text into <paramref name="output"/>.</summary>
    public void WriteTo(IBufferWriter<byte> output) => Collect(new PrometheusTextWriter(output));
}
