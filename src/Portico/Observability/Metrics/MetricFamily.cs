using System.Collections.Concurrent;
using System.Text;

namespace Portico.Observability.Metrics;

/// <summary>Something that writes metric families on a scrape: a <see cref="MetricFamily"/>, or a group of read-at-scrape values.</summary>
public interface IMetricCollector
{
    /// <summary>Writes this collector's families, each whole (header, then all its samples).</summary>
    void Collect(PrometheusTextWriter writer);
}

/// <summary>Checks of metric and label names against the text format's grammar.</summary>
public static class MetricNames
{
    /// <summary>Throws unless <paramref name="name"/> matches <c>[a-zA-Z_:][a-zA-Z0-9_:]*</c>.</summary>
    public static void ValidateMetricName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!IsValid(name, allowColon: true))
        {
            throw new ArgumentException($"'{name}' is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", nameof(name));
        }
    }

    /// <summary>Throws unless <paramref name="name"/> matches <c>[a-zA-Z_][a-zA-Z0-9_]*</c> and does not start with <c>__</c> (reserved).</summary>
    public static void ValidateLabelName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!IsValid(name, allowColon: false) || name.StartsWith("__", StringComparison.Ordinal))
        {
            throw new ArgumentException($"'{name}' is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting with __)", nameof(name));
        }
    }

    private static bool IsValid(string name, bool allowColon)
    {
        if (name.Length == 0 || char.IsAsciiDigit(name[0]))
        {
            return false;
        }
        foreach (var c in name)
        {
            if (!char.IsAsciiLetterOrDigit(c) && c != '_' && !(allowColon && c == ':'))
            {
                return false;
            }
        }
        return true;
    }
}

/// <summary>A metric family's identity: name, help text, type and label names.</summary>
public abstract class MetricFamily : IMetricCollector
{
    private protected MetricFamily(string name, string help, MetricType type, string[] labelNames)
    {
        MetricNames.ValidateMetricName(name);
        ArgumentNullException.ThrowIfNull(help);
        ArgumentNullException.ThrowIfNull(labelNames);
        if (labelNames.Length > LabelValues.MaxCount)
        {
            throw new ArgumentException($"at most {LabelValues.MaxCount} labels are supported", nameof(labelNames));
        }
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var label in labelNames)
        {
            MetricNames.ValidateLabelName(label);
            if (!seen.Add(label))
            {
                throw new ArgumentException($"label '{label}' appears twice", nameof(labelNames));
            }
        }
        Name = name;
        Help = help;
        Type = type;
        LabelNames = [.. labelNames];
        NameBytes = Encoding.ASCII.GetBytes(name);
    }

    /// <summary>The family name, as on the <c># TYPE</c> line (for counters it ends in <c>_total</c>).</summary>
    public string Name { get; }

    public string Help { get; }

    public MetricType Type { get; }

    public IReadOnlyList<string> LabelNames { get; }

    /// <summary>The UTF-8 (ASCII) bytes of <see cref="Name"/>.</summary>
    private protected byte[] NameBytes { get; }

    /// <inheritdoc/>
    public abstract void Collect(PrometheusTextWriter writer);
}

/// <summary>
/// A metric family: a name, help text, type and label names, and one cell per label set seen. Cells are created on
/// first use and then kept, so code on the request path looks a cell up once (or caches it on a model) and from then
/// on only increments it.
/// </summary>
/// <remarks>
/// A lookup of a label set seen before is a <see cref="ConcurrentDictionary{TKey,TValue}"/> read with a struct key:
/// no lock and no allocation. Creating a cell takes a lock (once per label set) so the scrape order, kept in a
/// copy-on-write array, is the order of first use and a scrape never sees a half-added cell.
/// </remarks>
public abstract class MetricFamily<TCell> : MetricFamily
    where TCell : class
{
    private readonly ConcurrentDictionary<LabelValues, TCell> _cells = new();
    private readonly Lock _gate = new();
    private readonly string[] _labelNames;
    private Entry[] _entries = [];

    private protected MetricFamily(string name, string help, MetricType type, string[] labelNames)
        : base(name, help, type, labelNames)
    {
        _labelNames = [.. labelNames];
    }

    /// <summary>The cells and their rendered label sets, in order of first use.</summary>
    private protected ReadOnlySpan<Entry> Entries => Volatile.Read(ref _entries);

    /// <summary>How many label sets the family has.</summary>
    public int Count => Volatile.Read(ref _entries).Length;

    /// <summary>The cell of a label set; created on first use (allocates once), then found without allocating.</summary>
    public TCell WithLabels(LabelValues values)
    {
        if (_cells.TryGetValue(values, out var cell))
        {
            return cell;
        }
        return Add(values);
    }

    public TCell WithLabels(string v0) => WithLabels(LabelValues.Of(v0));

    public TCell WithLabels(string v0, string v1) => WithLabels(LabelValues.Of(v0, v1));

    public TCell WithLabels(string v0, string v1, string v2) => WithLabels(LabelValues.Of(v0, v1, v2));

    /// <summary>
    /// Each label set with its cell, in order of first use: a copy for readers other than the scrape (the admin API sums
    /// them). Allocates; not for the request path.
    /// </summary>
    public KeyValuePair<LabelValues, TCell>[] GetCells()
    {
        var entries = Volatile.Read(ref _entries);
        var cells = new KeyValuePair<LabelValues, TCell>[entries.Length];
        for (var i = 0; i < entries.Length; i++)
        {
            cells[i] = new KeyValuePair<LabelValues, TCell>(entries[i].Values, entries[i].Cell);
        }
        return cells;
    }

    /// <summary>Removes the series of a label set (a route or server that is gone); true when it existed.</summary>
    public bool Remove(LabelValues values)
    {
        lock (_gate)
        {
            if (!_cells.TryRemove(values, out _))
            {
                return false;
            }
            Volatile.Write(ref _entries, Array.FindAll(_entries, e => e.Values != values));
            return true;
        }
    }

    /// <summary>Removes every series whose label values match <paramref name="predicate"/>; returns how many.</summary>
    public int RemoveWhere(Func<LabelValues, bool> predicate)
    {
        ArgumentNullException.ThrowIfNull(predicate);
        lock (_gate)
        {
            var kept = Array.FindAll(_entries, e => !predicate(e.Values));
            var removed = _entries.Length - kept.Length;
            if (removed > 0)
            {
                foreach (var entry in _entries)
                {
                    if (predicate(entry.Values))
                    {
                        _cells.TryRemove(entry.Values, out _);
                    }
                }
                Volatile.Write(ref _entries, kept);
            }
            return removed;
        }
    }

    /// <inheritdoc/>
    public override void Collect(PrometheusTextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.WriteFamilyHeader(Name, Help, Type);
        foreach (var entry in Entries)
        {
            WriteCell(writer, entry.Labels, entry.Cell);
        }
    }

    /// <summary>Creates the cell of a new label set.</summary>
    private protected abstract TCell CreateCell();

    /// <summary>Writes the samples of one cell; <paramref name="labels"/> is its rendered label set.</summary>
    private protected abstract void WriteCell(PrometheusTextWriter writer, ReadOnlySpan<byte> labels, TCell cell);

    private TCell Add(LabelValues values)
    {
        if (values.Count != LabelNames.Count)
        {
            throw new ArgumentException($"{Name} has {LabelNames.Count} label(s) ({string.Join(", ", LabelNames)}); got {values.Count} value(s)", nameof(values));
        }
        lock (_gate)
        {
            if (_cells.TryGetValue(values, out var existing))
            {
                return existing;
            }
            var cell = CreateCell();
            var labels = PrometheusTextWriter.RenderLabels(_labelNames, values.ToArray());
            var entries = _entries;
            var next = new Entry[entries.Length + 1];
            entries.CopyTo(next, 0);
            next[^1] = new Entry(values, labels, cell);
            // The entry is published before the dictionary makes the cell findable, so every count a request adds is
            // in a cell that the next scrape writes.
            Volatile.Write(ref _entries, next);
            _cells[values] = cell;
            return cell;
        }
    }

    /// <summary>One label set of the family.</summary>
    private protected readonly record struct Entry(LabelValues Values, byte[] Labels, TCell Cell);
}
