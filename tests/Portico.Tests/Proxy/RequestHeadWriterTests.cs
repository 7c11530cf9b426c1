using System.Text;
using Portico.Proxy;

namespace Portico.Tests.Proxy;

/// <summary>
/// The own HTTP/1.1 client's request head writer: ASCII lines take the fast copy, other values are written as UTF-8
/// (what Kestrel decoded), a line break or NUL in a value is refused, and the buffer grows for a large head.
/// </summary>
public sealed class RequestHeadWriterTests
{
    private static string Written(HttpForwarder.RequestHeadWriter writer) => Encoding.UTF8.GetString(writer.Written.Span);

    [Fact]
    public void AsciiAndUtf8Values_WrittenAsLines_HostAndContentLengthAddedAtTheEnd()
    {
        var writer = new HttpForwarder.RequestHeadWriter("origin:8080");
        try
        {
            writer.RequestLine("POST", "/p?q=1");
            writer.Add("X-Forwarded-Proto", "http");
            writer.Add("X-Name", "caf\u00e9");
            writer.Add("X-Empty", "");
            writer.End("POST");

            Assert.Equal(
                "POST /p?q=1 HTTP/1.1\r\nX-Forwarded-Proto: http\r\nX-Name: caf\u00e9\r\nX-Empty: \r\nHost: origin:8080\r\nContent-Length: 0\r\n\r\n",
                Written(writer));
        }
        finally
        {
            writer.Dispose();
        }
    }

    [Theory]
    [InlineData("a\r\nX-Injected: 1")]
    [InlineData("a\nb")]
    [InlineData("a\0b")]
    [InlineData("caf\u00e9\r\nX-Injected: 1")]
    public void LineBreakOrNul_Refused(string value)
    {
        var writer = new HttpForwarder.RequestHeadWriter("origin");
        try
        {
            writer.RequestLine("GET", "/");
            try
            {
                writer.Add("X-Bad", value);
                Assert.Fail("a value with a line break or NUL was written: " + Written(writer));
            }
            catch (HttpForwarder.InvalidHeaderValueException ex)
            {
                // The caller turns this into an error answer; the half-written head is never sent.
                Assert.Contains("X-Bad", ex.Message);
            }
        }
        finally
        {
            writer.Dispose();
        }
    }

    [Fact]
    public void LargeValues_GrowTheBuffer_NothingLost()
    {
        var writer = new HttpForwarder.RequestHeadWriter("origin");
        try
        {
            writer.RequestLine("GET", "/");
            var big = new string('v', 40_000);
            writer.Add("X-Big-1", big);
            writer.Add("X-Big-2", big);
            writer.End("GET");

            var text = Written(writer);
            Assert.Equal($"GET / HTTP/1.1\r\nX-Big-1: {big}\r\nX-Big-2: {big}\r\nHost: origin\r\n\r\n", text);
        }
        finally
        {
            writer.Dispose();
        }
    }
}
