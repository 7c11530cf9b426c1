using Portico.Config;

namespace Portico.Tests.Config;

public sealed class ByteSizeTests
{
    [Theory]
    [InlineData("100", 100L)]
    [InlineData("0", 0L)]
    [InlineData("100B", 100L)]
    [InlineData("10KB", 10L * 1024)]
    [InlineData("10kb", 10L * 1024)]
    [InlineData("10K", 10L * 1024)]
    [InlineData("64KiB", 64L * 1024)]
    [InlineData("512MB", 512L * 1024 * 1024)]
    [InlineData("512 mb", 512L * 1024 * 1024)]
    [InlineData("1GB", 1L << 30)]
    [InlineData("1GiB", 1L << 30)]
    [InlineData("1G", 1L << 30)]
    [InlineData("1gib", 1L << 30)]
    [InlineData("10GB", 10L << 30)]
    [InlineData("1.5GB", 3L << 29)]
    [InlineData("2TB", 2L << 40)]
    [InlineData(" 1GB ", 1L << 30)]
    public void TryParse_ValidSize_ReturnsBytes(string text, long expected)
    {
        Assert.True(ByteSize.TryParse(text, out var bytes));
        Assert.Equal(expected, bytes);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("GB")]
    [InlineData("-1GB")]
    [InlineData("1XB")]
    [InlineData("1GBs")]
    [InlineData("1 G B")]
    [InlineData("1.2.3MB")]
    [InlineData("99999999999TB")]
    [InlineData("1e3")]
    public void TryParse_InvalidSize_ReturnsFalse(string text)
    {
        Assert.False(ByteSize.TryParse(text, out var bytes));
        Assert.Equal(0, bytes);
    }
}
