namespace Portico.Observability.Metrics;

/// <summary>
/// A gauge family whose values are set on the request path (e.g. open connections), one <see cref="GaugeCell"/> per
/// label set. Values that already live elsewhere (health, breaker state, memory) are better read at scrape time by an
/// <see cref="IMetricCollector"/> than pushed.
/// </summary>
public sealed class Gauge : MetricFamily<GaugeCell>
{
    private readonly GaugeCell? _unlabeled;

    public Gauge(string name, string help, params string[] labelNames)
        : base(name, help, MetricType.Gauge, labelNames)
    {
        if (labelNames.Length == 0)
        {
            _unlabeled = WithLabels(LabelValues.None);
        }
    }

    /// <summary>The only cell of a family without labels.</summary>
    public GaugeCell Unlabeled => _unlabeled ?? throw new InvalidOperationException($"{Name} has labels; use WithLabels");

    private protected override GaugeCell CreateCell() => new();

    private protected override void WriteCell(PrometheusTextWriter writer, ReadOnlySpan<byte> labels, GaugeCell cell) =>
        writer.WriteSample(NameBytes, labels, cell.Value);
}

/// <summary>One gauge series: a 64-bit integer that goes up and down, changed with <see cref="Interlocked"/>.</summary>
public sealed class GaugeCell
{
    private long _value;

    public long Value => Volatile.Read(ref _value);

    public void Inc() => Interlocked.Increment(ref _value);

    public void Dec() => Interlocked.Decrement(ref _value);

    public void Add(long delta) => Interlocked.Add(ref _value, delta);

    public void Set(long value) => Volatile.Write(ref _value, value);
}
