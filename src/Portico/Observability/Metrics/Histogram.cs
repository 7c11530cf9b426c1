using System.Text;

namespace Portico.Observability.Metrics;

/// <summary>
/// A histogram family: observations counted into fixed buckets, plus their sum and count, one
/// <see cref="HistogramCell"/> per label set. Written as <c>name_bucket{…,le="…"}</c> lines with cumulative counts
/// ending in <c>le="+Inf"</c>, then <c>name_sum</c> and <c>name_count</c>.
/// </summary>
public sealed class Histogram : MetricFamily<HistogramCell>
{
    /// <summary>
    /// Buckets for durations in seconds, from half a millisecond (a proxy hop on a LAN) to 10 s:
    /// 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10. Prometheus' client defaults
    /// start at 5 ms, too coarse for a proxy whose own overhead is well below that.
    /// </summary>
    public static readonly double[] LatencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly double[] _bounds;
    private readonly byte[][] _leLabels;
    private readonly HistogramCell? _unlabeled;

    /// <param name="name">Family name, without the <c>_bucket</c>/<c>_sum</c>/<c>_count</c> suffixes.</param>
    /// <param name="help">Help text.</param>
    /// <param name="buckets">Upper bounds (inclusive), strictly increasing, finite; <c>+Inf</c> is implied.</param>
    /// <param name="labelNames">Label names; <c>le</c> is reserved for the buckets.</param>
    public Histogram(string name, string help, double[] buckets, params string[] labelNames)
        : base(name, help, MetricType.Histogram, labelNames)
    {
        ArgumentNullException.ThrowIfNull(buckets);
        if (buckets.Length == 0)
        {
            throw new ArgumentException("at least one bucket is required", nameof(buckets));
        }
        for (var i = 0; i < buckets.Length; i++)
        {
            if (!double.IsFinite(buckets[i]) || i > 0 && buckets[i] <= buckets[i - 1])
            {
                throw new ArgumentException("bucket bounds must be finite and strictly increasing", nameof(buckets));
            }
        }
        if (Array.IndexOf(labelNames, "le") >= 0)
        {
            throw new ArgumentException("'le' is reserved for histogram buckets", nameof(labelNames));
        }
        _bounds = [.. buckets];
        _leLabels = new byte[buckets.Length + 1][];
        for (var i = 0; i < buckets.Length; i++)
        {
            _leLabels[i] = Encoding.ASCII.GetBytes("le=\"" + PrometheusTextWriter.FormatValue(buckets[i]) + "\"");
        }
        _leLabels[^1] = "le=\"+Inf\""u8.ToArray();
        if (labelNames.Length == 0)
        {
            _unlabeled = WithLabels(LabelValues.None);
        }
    }

    /// <summary>The bucket upper bounds, without +Inf.</summary>
    public IReadOnlyList<double> Buckets => _bounds;

    /// <summary>The only cell of a family without labels.</summary>
    public HistogramCell Unlabeled => _unlabeled ?? throw new InvalidOperationException($"{Name} has labels; use WithLabels");

    /// <summary>Records one observation in a family without labels.</summary>
    public void Observe(double value) => Unlabeled.Observe(value);

    private protected override HistogramCell CreateCell() => new(_bounds);

    private protected override void WriteCell(PrometheusTextWriter writer, ReadOnlySpan<byte> labels, HistogramCell cell)
    {
        // Each bucket is read once and summed here, so the cumulative counts never go down and _count equals the
        // +Inf bucket even while requests keep observing during the scrape.
        var cumulative = 0L;
        for (var i = 0; i < _leLabels.Length; i++)
        {
            cumulative += cell.BucketCount(i);
            writer.WriteSample(NameBytes, "_bucket"u8, labels, _leLabels[i], cumulative);
        }
        writer.WriteSample(NameBytes, "_sum"u8, labels, default, cell.Sum);
        writer.WriteSample(NameBytes, "_count"u8, labels, default, cumulative);
    }
}

/// <summary>
/// One histogram series: a count per bucket (not cumulative; summed at scrape) and the sum of observations, all
/// updated with <see cref="Interlocked"/>. No lock, no allocation per observation.
/// </summary>
/// <remarks>
/// The sum is a <see cref="double"/> kept as its bits in a <see cref="long"/> and added by compare-and-swap: exact
/// for any unit. A long of microseconds would be a plain <see cref="Interlocked.Add(ref long, long)"/>, but it ties the
/// type to durations and rounds each observation; under contention the CAS loop retries, which at a few requests per
/// microsecond per core is rare. The count is not kept apart: it is the sum of the buckets, one atomic fewer per
/// observation.
/// </remarks>
public sealed class HistogramCell
{
    private readonly double[] _bounds;
    private readonly long[] _counts;
    private long _sumBits;

    internal HistogramCell(double[] bounds)
    {
        _bounds = bounds;
        _counts = new long[bounds.Length + 1];
    }

    /// <summary>Records <paramref name="value"/>: into the first bucket whose bound is at least it (<c>le</c>), and the sum. NaN is ignored.</summary>
    public void Observe(double value)
    {
        if (double.IsNaN(value))
        {
            return;
        }
        var bounds = _bounds;
        var i = 0;
        // A linear scan: 14 bounds, and most observations of a proxy fall in the first few.
        while (i < bounds.Length && value > bounds[i])
        {
            i++;
        }
        Interlocked.Increment(ref _counts[i]);
        var current = Volatile.Read(ref _sumBits);
        while (true)
        {
            var next = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(current) + value);
            var seen = Interlocked.CompareExchange(ref _sumBits, next, current);
            if (seen == current)
            {
                return;
            }
            current = seen;
        }
    }

    /// <summary>Records a duration in seconds.</summary>
    public void Observe(TimeSpan duration) => Observe(duration.TotalSeconds);

    /// <summary>The sum of all observations.</summary>
    public double Sum => BitConverter.Int64BitsToDouble(Volatile.Read(ref _sumBits));

    /// <summary>How many observations.</summary>
    public long Count
    {
        get
        {
            var total = 0L;
            for (var i = 0; i < _counts.Length; i++)
            {
                total += Volatile.Read(ref _counts[i]);
            }
            return total;
        }
    }

    /// <summary>Observations in bucket <paramref name="index"/> alone (not cumulative); the last is above every bound.</summary>
    public long BucketCount(int index) => Volatile.Read(ref _counts[index]);
}
