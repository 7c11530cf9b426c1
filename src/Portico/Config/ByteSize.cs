using System.Globalization;

namespace Portico.Config;

/// <summary>Parses sizes written in config files, such as <c>cache.memory.max_size: "1GB"</c>.</summary>
public static class ByteSize
{
    /// <summary>
    /// Parses a size: a non-negative number (a fraction is allowed, <c>"1.5GB"</c>) followed by an optional unit,
    /// case-insensitive, with optional spaces between: none or <c>B</c> (bytes), <c>K</c>/<c>KB</c>/<c>KiB</c>,
    /// <c>M</c>/<c>MB</c>/<c>MiB</c>, <c>G</c>/<c>GB</c>/<c>GiB</c>, <c>T</c>/<c>TB</c>/<c>TiB</c>.
    /// </summary>
    /// <remarks>
    /// Every unit is a power of 1024, whether it is written <c>KB</c> or <c>KiB</c>, as nginx reads <c>1g</c>:
    /// operators who write <c>max_size: "1GB"</c> for a cache expect a binary gigabyte. It may seem more correct to
    /// read <c>GB</c> as 10^9 (SI), but then a "1GB" cache would hold 7% less than its operator planned for.
    /// </remarks>
    /// <param name="s">The text, e.g. <c>"512MB"</c>, <c>"1GiB"</c>, <c>"100"</c>.</param>
    /// <param name="bytes">The size in bytes, rounded down; 0 when parsing fails.</param>
    /// <returns>False when the text is empty, negative, has an unknown unit, or overflows a <see cref="long"/>.</returns>
    public static bool TryParse(string s, out long bytes)
    {
        bytes = 0;
        if (string.IsNullOrWhiteSpace(s))
        {
            return false;
        }

        var text = s.Trim();
        var numberEnd = 0;
        while (numberEnd < text.Length && (char.IsAsciiDigit(text[numberEnd]) || text[numberEnd] == '.'))
        {
            numberEnd++;
        }

        if (numberEnd == 0)
        {
            return false;
        }

        if (!decimal.TryParse(text.AsSpan(0, numberEnd), NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var number))
        {
            return false;
        }

        var multiplier = UnitMultiplier(text.AsSpan(numberEnd).Trim());
        if (multiplier < 0)
        {
            return false;
        }

        try
        {
            bytes = (long)decimal.Floor(number * multiplier);
            return true;
        }
        catch (OverflowException)
        {
            bytes = 0;
            return false;
        }
    }

    /// <summary>The multiplier for a unit, or -1 when the unit is unknown.</summary>
    private static long UnitMultiplier(ReadOnlySpan<char> unit)
    {
        if (unit.IsEmpty || unit.Equals("B", StringComparison.OrdinalIgnoreCase))
        {
            return 1;
        }

        var exponent = char.ToUpperInvariant(unit[0]) switch
        {
            'K' => 1,
            'M' => 2,
            'G' => 3,
            'T' => 4,
            _ => -1,
        };
        if (exponent < 0)
        {
            return -1;
        }

        var suffix = unit[1..];
        if (!(suffix.IsEmpty
            || suffix.Equals("B", StringComparison.OrdinalIgnoreCase)
            || suffix.Equals("iB", StringComparison.OrdinalIgnoreCase)))
        {
            return -1;
        }

        return 1L << (10 * exponent);
    }
}
