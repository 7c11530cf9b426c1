using Portico.Observability.Metrics;
using static Portico.Tests.Observability.MetricsTestHelpers;

namespace Portico.Tests.Observability;

public sealed class PrometheusTextWriterTests
{
    [Fact]
    public void Counter_LabelValueWithBackslashQuoteNewline_IsEscaped()
    {
        var counter = new Counter("x_total", "help", "path");
        counter.WithLabels("a\\b\"c\nd").Inc();

        var text = Render(counter.Collect);

        Assert.Contains("x_total{path=\"a\\\\b\\\"c\\nd\"} 1\n", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Counter_LabelValueNonAscii_IsWrittenAsUtf8()
    {
        var counter = new Counter("x_total", "help", "route");
        counter.WithLabels("/café/ü").Add(3);

        Assert.Contains("x_total{route=\"/café/ü\"} 3\n", Render(counter.Collect), StringComparison.Ordinal);
    }

    [Fact]
    public void Family_Help_EscapesBackslashAndNewlineButNotQuote()
    {
        var gauge = new Gauge("g", "a \\ b\nc \"d\"");

        var text = Render(gauge.Collect);

        Assert.Equal("# HELP g a \\\\ b\\nc \"d\"\n# TYPE g gauge\ng 0\n", text);
    }

    [Fact]
    public void Counter_WithoutLabels_WritesHelpTypeAndBareSample()
    {
        var counter = new Counter("hits_total", "Hits.");
        counter.Inc();
        counter.Add(41);

        Assert.Equal("# HELP hits_total Hits.\n# TYPE hits_total counter\nhits_total 42\n", Render(counter.Collect));
    }

    [Fact]
    public void Counter_SeveralLabelSets_WrittenInOrderOfFirstUse()
    {
        var counter = new Counter("r_total", "h", "method", "code");
        counter.WithLabels("POST", "500").Inc();
        counter.WithLabels("GET", "200").Add(2);
        counter.WithLabels("POST", "500").Inc();

        Assert.Equal(["r_total{method=\"POST\",code=\"500\"} 2", "r_total{method=\"GET\",code=\"200\"} 2"], Samples(Render(counter.Collect)));
    }

    [Fact]
    public void Histogram_Observations_BucketsCumulativeEndingInInfThenSumAndCount()
    {
        // Binary fractions, so the sum is exact.
        var histogram = new Histogram("lat_seconds", "Latency.", [0.25, 0.5, 1], "route");
        var cell = histogram.WithLabels("api");
        cell.Observe(0.125);
        cell.Observe(0.25);   // on a bound: counts in that bucket (le = less or equal)
        cell.Observe(0.375);
        cell.Observe(2);
        cell.Observe(double.NaN);   // ignored

        var text = Render(histogram.Collect);

        Assert.Equal(
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
            + "lat_seconds_bucket{route=\"api\",le=\"0.25\"} 2\n"
            + "lat_seconds_bucket{route=\"api\",le=\"0.5\"} 3\n"
            + "lat_seconds_bucket{route=\"api\",le=\"1\"} 3\n"
            + "lat_seconds_bucket{route=\"api\",le=\"+Inf\"} 4\n"
            + "lat_seconds_sum{route=\"api\"} 2.75\n"
            + "lat_seconds_count{route=\"api\"} 4\n",
            text);
    }

    [Fact]
    public void Histogram_WithoutLabels_WritesOnlyLe()
    {
        var histogram = new Histogram("d_seconds", "h", [0.0005, 10]);
        histogram.Observe(0.0001);

        var samples = Samples(Render(histogram.Collect));

        Assert.Equal(["d_seconds_bucket{le=\"0.0005\"} 1", "d_seconds_bucket{le=\"10\"} 1", "d_seconds_bucket{le=\"+Inf\"} 1",
            "d_seconds_sum 0.0001", "d_seconds_count 1"], samples);
    }

    [Theory]
    [InlineData(double.PositiveInfinity, "+Inf")]
    [InlineData(double.NegativeInfinity, "-Inf")]
    [InlineData(double.NaN, "NaN")]
    [InlineData(0.1, "0.1")]
    [InlineData(1e-5, "1E-05")]
    [InlineData(1234567.0, "1234567")]
    [InlineData(-2.5, "-2.5")]
    public void FormatValue_SpecialAndOrdinaryValues_InFormatSpelling(double value, string expected)
    {
        Assert.Equal(expected, PrometheusTextWriter.FormatValue(value));
    }

    [Fact]
    public void WriteSample_LabelsGivenAtScrape_AreEscaped()
    {
        var text = Render(w => w.WriteSample("up", ["a", "b"], ["x\"", "y\\"], 1));

        Assert.Equal("up{a=\"x\\\"\",b=\"y\\\\\"} 1\n", text);
    }

    [Theory]
    [InlineData("1abc")]
    [InlineData("a-b")]
    [InlineData("")]
    [InlineData("a b")]
    public void Family_InvalidName_Throws(string name)
    {
        Assert.Throws<ArgumentException>(() => new Counter(name, "h"));
    }

    [Theory]
    [InlineData("__reserved")]
    [InlineData("a:b")]
    [InlineData("9")]
    public void Family_InvalidLabelName_Throws(string label)
    {
        Assert.Throws<ArgumentException>(() => new Counter("c_total", "h", label));
    }

    [Fact]
    public void Histogram_LeLabelOrUnorderedBuckets_Throw()
    {
        Assert.Throws<ArgumentException>(() => new Histogram("h", "h", [1], "le"));
        Assert.Throws<ArgumentException>(() => new Histogram("h", "h", [1, 1]));
        Assert.Throws<ArgumentException>(() => new Histogram("h", "h", [double.PositiveInfinity]));
    }

    [Fact]
    public void WithLabels_WrongNumberOfValues_Throws()
    {
        var counter = new Counter("c_total", "h", "a", "b");

        Assert.Throws<ArgumentException>(() => counter.WithLabels("only-one"));
    }

    [Fact]
    public void Counter_NegativeAdd_Throws()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new Counter("c_total", "h").Add(-1));
    }

    [Fact]
    public void Registry_TwoFamiliesWithOneName_Throws()
    {
        var registry = new MetricRegistry();
        registry.Add(new Counter("c_total", "h"));

        Assert.Throws<ArgumentException>(() => registry.Add(new Counter("c_total", "other")));
    }

    [Fact]
    public void PooledBufferWriter_GrowsPastInitialCapacity_KeepsBytes()
    {
        using var buffer = new PooledBufferWriter(16);
        var counter = new Counter("c_total", "h", "k");
        for (var i = 0; i < 200; i++)
        {
            counter.WithLabels("v" + i).Inc();
        }

        counter.Collect(new PrometheusTextWriter(buffer));

        var text = System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
        Assert.Equal(200, Samples(text).Length);
        Assert.EndsWith("c_total{k=\"v199\"} 1\n", text, StringComparison.Ordinal);
    }
}
