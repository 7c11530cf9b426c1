using System.Buffers;
using System.Globalization;
using System.Text;

namespace Portico.Observability.Metrics;

/// <summary>The metric types of the Prometheus text format, as written on a <c># TYPE</c> line.</summary>
public enum MetricType
{
    Counter,
    Gauge,
    Histogram,
}

/// <summary>
/// Writes the Prometheus text exposition format, version 0.0.4
/// (https://prometheus.io/docs/instrumenting/exposition_formats/), as UTF-8 into an <see cref="IBufferWriter{T}"/>.
/// </summary>
/// <remarks>
/// <para>
/// One family is a <c># HELP</c> line, a <c># TYPE</c> line and its samples, all together: the format does not allow
/// a family's samples to be split by another family's. Label sets are passed pre-rendered (<c>a="x",b="y"</c>, see
/// <see cref="RenderLabels"/>) so a scrape copies bytes instead of escaping every value again.
/// </para>
/// <para>
/// Escaping: in HELP text a backslash becomes <c>\\</c> and a line feed <c>\n</c>; in label values also a double
/// quote becomes <c>\"</c>. Numbers use the invariant culture, shortest round-trip form; infinities are <c>+Inf</c> and
/// <c>-Inf</c> and not-a-number is <c>NaN</c>, as the format spells them (.NET would write "∞" or "Infinity").
/// </para>
/// </remarks>
public sealed class PrometheusTextWriter
{
    private readonly IBufferWriter<byte> _output;

    public PrometheusTextWriter(IBufferWriter<byte> output)
    {
        ArgumentNullException.ThrowIfNull(output);
        _output = output;
    }

    /// <summary>Writes the <c># HELP</c> and <c># TYPE</c> lines that open a family.</summary>
    public void WriteFamilyHeader(string name, string help, MetricType type)
    {
        Write("# HELP "u8);
        WriteAscii(name);
        Write(" "u8);
        WriteEscaped(help, escapeQuote: false);
        Write("\n# TYPE "u8);
        WriteAscii(name);
        Write(type switch
        {
            MetricType.Counter => " counter\n"u8,
            MetricType.Gauge => " gauge\n"u8,
            _ => " histogram\n"u8,
        });
    }

    /// <summary>Writes <c>name{labels} value</c>; <paramref name="labels"/> is rendered by <see cref="RenderLabels"/> (empty: none).</summary>
    public void WriteSample(ReadOnlySpan<byte> name, ReadOnlySpan<byte> labels, long value) =>
        WriteSample(name, default, labels, default, value);

    /// <summary>Writes <c>name{labels} value</c>; <paramref name="labels"/> is rendered by <see cref="RenderLabels"/> (empty: none).</summary>
    public void WriteSample(ReadOnlySpan<byte> name, ReadOnlySpan<byte> labels, double value) =>
        WriteSample(name, default, labels, default, value);

    /// <summary>
    /// Writes one sample with labels escaped now, for values known only at scrape time (e.g. read from the current
    /// config snapshot). <paramref name="labelNames"/> and <paramref name="labelValues"/> have the same length.
    /// </summary>
    public void WriteSample(string name, ReadOnlySpan<string> labelNames, ReadOnlySpan<string> labelValues, double value)
    {
        if (labelNames.Length != labelValues.Length)
        {
            throw new ArgumentException("one value per label name is required", nameof(labelValues));
        }
        WriteAscii(name);
        if (labelNames.Length > 0)
        {
            Write("{"u8);
            for (var i = 0; i < labelNames.Length; i++)
            {
                if (i > 0)
                {
                    Write(","u8);
                }
                WriteAscii(labelNames[i]);
                Write("=\""u8);
                WriteEscaped(labelValues[i], escapeQuote: true);
                Write("\""u8);
            }
            Write("}"u8);
        }
        Write(" "u8);
        WriteValue(value);
        Write("\n"u8);
    }

    /// <summary>
    /// Writes <c>name+suffix{labels,extraLabel} value</c>: the histogram's <c>_bucket</c> lines pass the <c>le="…"</c>
    /// pair as <paramref name="extraLabel"/>; <c>_sum</c> and <c>_count</c> pass none.
    /// </summary>
    internal void WriteSample(ReadOnlySpan<byte> name, ReadOnlySpan<byte> suffix, ReadOnlySpan<byte> labels, ReadOnlySpan<byte> extraLabel, long value)
    {
        WriteSeries(name, suffix, labels, extraLabel);
        var span = _output.GetSpan(24);
        value.TryFormat(span, out var written, default, CultureInfo.InvariantCulture);
        span[written++] = (byte)'\n';
        _output.Advance(written);
    }

    /// <inheritdoc cref="WriteSample(ReadOnlySpan{byte}, ReadOnlySpan{byte}, ReadOnlySpan{byte}, ReadOnlySpan{byte}, long)"/>
    internal void WriteSample(ReadOnlySpan<byte> name, ReadOnlySpan<byte> suffix, ReadOnlySpan<byte> labels, ReadOnlySpan<byte> extraLabel, double value)
    {
        WriteSeries(name, suffix, labels, extraLabel);
        WriteValue(value);
        Write("\n"u8);
    }

    /// <summary>
    /// Renders a label set once, for reuse on every scrape: <c>a="x",b="y"</c> (no braces), values escaped. Names must
    /// be valid label names (<see cref="MetricNames.ValidateLabelName"/>); they are not checked here.
    /// </summary>
    public static byte[] RenderLabels(ReadOnlySpan<string> names, ReadOnlySpan<string> values)
    {
        if (names.Length != values.Length)
        {
            throw new ArgumentException("one value per label name is required", nameof(values));
        }
        var buffer = new ArrayBufferWriter<byte>(64);
        var writer = new PrometheusTextWriter(buffer);
        for (var i = 0; i < names.Length; i++)
        {
            if (i > 0)
            {
                writer.Write(","u8);
            }
            writer.WriteAscii(names[i]);
            writer.Write("=\""u8);
            writer.WriteEscaped(values[i], escapeQuote: true);
            writer.Write("\""u8);
        }
        return buffer.WrittenSpan.ToArray();
    }

    /// <summary>Formats a number as the format wants it: shortest round-trip, invariant, <c>+Inf</c>/<c>-Inf</c>/<c>NaN</c>.</summary>
    public static string FormatValue(double value)
    {
        Span<byte> buffer = stackalloc byte[32];
        return Encoding.ASCII.GetString(buffer[..FormatValue(value, buffer)]);
    }

    private static int FormatValue(double value, Span<byte> destination)
    {
        ReadOnlySpan<byte> special;
        if (double.IsNaN(value))
        {
            special = "NaN"u8;
        }
        else if (double.IsPositiveInfinity(value))
        {
            special = "+Inf"u8;
        }
        else if (double.IsNegativeInfinity(value))
        {
            special = "-Inf"u8;
        }
        else
        {
            // "R" is the shortest string that parses back to the same double (e.g. 0.1, 1E-05); Go's ParseFloat,
            // which Prometheus uses, reads every form .NET writes.
            value.TryFormat(destination, out var written, "R", CultureInfo.InvariantCulture);
            return written;
        }
        special.CopyTo(destination);
        return special.Length;
    }

    private void WriteSeries(ReadOnlySpan<byte> name, ReadOnlySpan<byte> suffix, ReadOnlySpan<byte> labels, ReadOnlySpan<byte> extraLabel)
    {
        Write(name);
        Write(suffix);
        if (labels.Length > 0 || extraLabel.Length > 0)
        {
            Write("{"u8);
            Write(labels);
            if (labels.Length > 0 && extraLabel.Length > 0)
            {
                Write(","u8);
            }
            Write(extraLabel);
            Write("}"u8);
        }
        Write(" "u8);
    }

    private void WriteValue(double value)
    {
        var span = _output.GetSpan(32);
        _output.Advance(FormatValue(value, span));
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty)
        {
            return;
        }
        var span = _output.GetSpan(bytes.Length);
        bytes.CopyTo(span);
        _output.Advance(bytes.Length);
    }

    /// <summary>Metric and label names: ASCII by their grammar, so one byte per char.</summary>
    private void WriteAscii(string text)
    {
        var span = _output.GetSpan(text.Length);
        var written = Encoding.ASCII.GetBytes(text, span);
        _output.Advance(written);
    }

    private void WriteEscaped(string text, bool escapeQuote)
    {
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            ReadOnlySpan<byte> escape;
            if (c == '\\')
            {
                escape = "\\\\"u8;
            }
            else if (c == '\n')
            {
                escape = "\\n"u8;
            }
            else if (c == '"' && escapeQuote)
            {
                escape = "\\\""u8;
            }
            else
            {
                continue;
            }
            WriteUtf8(text.AsSpan(start, i - start));
            Write(escape);
            start = i + 1;
        }
        WriteUtf8(text.AsSpan(start));
    }

    private void WriteUtf8(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty)
        {
            return;
        }
        var span = _output.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length));
        _output.Advance(Encoding.UTF8.GetBytes(text, span));
    }
}
