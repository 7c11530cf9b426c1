using Portico.Server.Http2;

namespace Portico.Tests.Server;

// An h2c stream's :path becomes the request's RawTarget, Path (percent-decoded, dot segments removed) and QueryString.
// Streams are pooled and keep the strings of the last :path they saw, so a stream used again must still get each
// request's own values, whether the :path repeats the last one or not.
public sealed class Http2StreamTargetTests
{
    [Fact]
    public void SetTarget_OneStreamOneRequestAfterAnother_EachGetsItsOwnPathAndQuery()
    {
        var stream = Http2Stream.Rent();
        (string Target, string Path, string Query)[] requests =
        [
            ("/a?x=1", "/a", "?x=1"),
            ("/a?x=1", "/a", "?x=1"),
            ("/a", "/a", ""),
            ("/a?x=2", "/a", "?x=2"),
            ("/b/../c?y=3", "/c", "?y=3"),
            ("/%61b", "/ab", ""),
            ("/a?x=1", "/a", "?x=1"),
        ];

        var id = 1;
        foreach (var (target, path, query) in requests)
        {
            stream.Initialize(null!, id, 65_535, 65_535, maxRequestBodySize: null);   // as the next stream it serves
            id += 2;
            stream.SetTarget(System.Text.Encoding.ASCII.GetBytes(target));

            Assert.Equal((target, path, query), (stream.RawTarget, stream.Path, stream.QueryString));
        }
    }

    [Fact]
    public void SetTarget_RepeatedTarget_SameStringsNotNewOnes()
    {
        var stream = Http2Stream.Rent();
        stream.Initialize(null!, 1, 65_535, 65_535, maxRequestBodySize: null);
        stream.SetTarget("/repeat?q=1"u8);
        var (raw, path) = (stream.RawTarget, stream.Path);

        stream.Initialize(null!, 3, 65_535, 65_535, maxRequestBodySize: null);
        stream.SetTarget("/repeat?q=1"u8);

        Assert.Same(raw, stream.RawTarget);
        Assert.Same(path, stream.Path);
    }
}
