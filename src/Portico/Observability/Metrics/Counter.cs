namespace Portico.Observability.Metrics;

/// <summary>A counter family: values that only go up (requests, bytes, errors), one <see cref="CounterCell"/> per label set.</summary>
/// <remarks>The family name should end in <c>_total</c>, as Prometheus' naming rules ask and <c>promtool check metrics</c> checks.</remarks>
public sealed class Counter : MetricFamily<CounterCell>
{
    private readonly CounterCell? _unlabeled;

    public Counter(string name, string help, params string[] labelNames)
        : base(name, help, MetricType.Counter, labelNames)
    {
        if (labelNames.Length == 0)
        {
            _unlabeled = WithLabels(LabelValues.None);
        }
    }

    /// <summary>The only cell of a family without labels.</summary>
    public CounterCell Unlabeled => _unlabeled ?? throw new InvalidOperationException($"{Name} has labels; use WithLabels");

    /// <summary>Adds one to a family without labels.</summary>
    public void Inc() => Unlabeled.Inc();

    /// <summary>Adds <paramref name="value"/> (at least 0) to a family without labels.</summary>
    public void Add(long value) => Unlabeled.Add(value);

    private protected override CounterCell CreateCell() => new();

    private protected override void WriteCell(PrometheusTextWriter writer, ReadOnlySpan<byte> labels, CounterCell cell) =>
        writer.WriteSample(NameBytes, labels, cell.Value);
}

/// <summary>
/// One counter series: a 64-bit integer added to with <see cref="Interlocked"/>, no lock, no allocation. Integer
/// counts cover what Portico counts (requests, bytes, errors); a 64-bit count does not wrap in practice.
/// </summary>
/// <remarks>
/// A single cell shared by all cores costs a cache-line transfer per increment under contention; striping it per core
/// was considered and left out: on the request path each request touches a few cells spread over routes and status
/// codes, so contention on one line is low, and a scrape would have to sum the stripes.
/// </remarks>
public sealed class CounterCell
{
    private long _value;

    /// <summary>The current count.</summary>
    public long Value => Volatile.Read(ref _value);

    public void Inc() => Interlocked.Increment(ref _value);

    /// <summary>Adds <paramref name="value"/>; a counter never goes down, so a negative value throws.</summary>
    public void Add(long value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(value);
        if (value != 0)
        {
            Interlocked.Add(ref _value, value);
        }
    }
}
