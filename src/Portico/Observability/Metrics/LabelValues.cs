namespace Portico.Observability.Metrics;

/// <summary>
/// The values of a label set, up to four, as a struct: the key a family looks its cells up by, so a lookup of a
/// label set seen before allocates nothing (a <c>string[]</c> key would allocate per call).
/// </summary>
public readonly struct LabelValues : IEquatable<LabelValues>
{
    /// <summary>The most labels a family may have. Portico's families use at most three.</summary>
    public const int MaxCount = 4;

    private readonly string? _v0;
    private readonly string? _v1;
    private readonly string? _v2;
    private readonly string? _v3;

    private LabelValues(int count, string? v0, string? v1, string? v2, string? v3)
    {
        Count = count;
        _v0 = v0;
        _v1 = v1;
        _v2 = v2;
        _v3 = v3;
    }

    public static LabelValues None => default;

    public static LabelValues Of(string v0) => new(1, Check(v0), null, null, null);

    public static LabelValues Of(string v0, string v1) => new(2, Check(v0), Check(v1), null, null);

    public static LabelValues Of(string v0, string v1, string v2) => new(3, Check(v0), Check(v1), Check(v2), null);

    public static LabelValues Of(string v0, string v1, string v2, string v3) => new(4, Check(v0), Check(v1), Check(v2), Check(v3));

    /// <summary>How many values.</summary>
    public int Count { get; }

    public string this[int index] => (uint)index < (uint)Count
        ? index switch
        {
            0 => _v0!,
            1 => _v1!,
            2 => _v2!,
            _ => _v3!,
        }
        : throw new ArgumentOutOfRangeException(nameof(index));

    /// <summary>The values as an array (allocates; for rendering a new label set, not for lookups).</summary>
    public string[] ToArray()
    {
        var values = new string[Count];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = this[i];
        }
        return values;
    }

    public bool Equals(LabelValues other) =>
        Count == other.Count
        && string.Equals(_v0, other._v0, StringComparison.Ordinal)
        && string.Equals(_v1, other._v1, StringComparison.Ordinal)
        && string.Equals(_v2, other._v2, StringComparison.Ordinal)
        && string.Equals(_v3, other._v3, StringComparison.Ordinal);

    public override bool Equals(object? obj) => obj is LabelValues other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(Count, _v0, _v1, _v2, _v3);

    public static bool operator ==(LabelValues left, LabelValues right) => left.Equals(right);

    public static bool operator !=(LabelValues left, LabelValues right) => !left.Equals(right);

    public override string ToString() => string.Join(",", ToArray());

    private static string Check(string value) => value ?? throw new ArgumentNullException(nameof(value), "a label value must not be null; use \"\"");
}
