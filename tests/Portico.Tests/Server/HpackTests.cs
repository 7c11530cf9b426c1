using System.Text;
using Portico.Server.Http2;

namespace Portico.Tests.Server;

public sealed class HpackTests
{
    private struct ListSink(List<(int StaticIndex, string Name, string Value)> fields) : IHpackSink
    {
        public readonly void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value) =>
            fields.Add((staticIndex, Encoding.Latin1.GetString(name), Encoding.Latin1.GetString(value)));
    }

    /// <summary>Allocation-free: only adds up what it sees.</summary>
    private struct CountingSink : IHpackSink
    {
        public int Fields;
        public int Bytes;

        public void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value)
        {
            Fields++;
            Bytes += name.Length + value.Length + staticIndex;
        }
    }

    private static byte[] Hex(string hex) => Convert.FromHexString(hex.Replace(" ", "", StringComparison.Ordinal));

    private static List<(int StaticIndex, string Name, string Value)> Decode(HpackDecoder decoder, byte[] block)
    {
        var fields = new List<(int, string, string)>();
        var sink = new ListSink(fields);
        decoder.Decode(block, ref sink);
        return fields;
    }

    private static List<(string Name, string Value)> Fields(List<(int StaticIndex, string Name, string Value)> fields)
    {
        var result = new List<(string, string)>();
        foreach (var field in fields)
        {
            result.Add((field.Name, field.Value));
        }
        return result;
    }

    /// <summary>The dynamic table, newest first, read back through indexed fields (which leave it unchanged).</summary>
    private static List<(string Name, string Value)> Table(HpackDecoder decoder)
    {
        var result = new List<(string, string)>();
        var block = new byte[8];
        for (var i = 0; i < decoder.DynamicTableCount; i++)
        {
            var length = HpackEncoder.WriteIndexed(block, HpackStaticTable.Count + 1 + i);
            result.AddRange(Fields(Decode(decoder, block[..length])));
        }
        return result;
    }

    private static HpackException DecodeFails(
        HpackDecoder decoder, byte[] block, HpackErrorKind kind = HpackErrorKind.CompressionError)
    {
        var error = Assert.Throws<HpackException>(() => Decode(decoder, block));
        Assert.Equal(kind, error.Kind);
        return error;
    }

    /// <summary>The block is a compression error whose message names the problem (so it failed for that reason).</summary>
    private static void FailsWith(string reason, byte[] block, HpackDecoder? decoder = null) =>
        Assert.Contains(reason, DecodeFails(decoder ?? new HpackDecoder(), block).Message, StringComparison.Ordinal);

    // ---- RFC 7541 Appendix C ----

    [Fact]
    public void C1_Integers()
    {
        var buffer = new byte[8];
        Assert.Equal(1, HpackEncoder.WriteInteger(buffer, 10, 5, 0));
        Assert.Equal(0x0A, buffer[0]);
        Assert.Equal(3, HpackEncoder.WriteInteger(buffer, 1337, 5, 0));
        Assert.Equal(Hex("1f9a0a"), buffer[..3]);
        Assert.Equal(1, HpackEncoder.WriteInteger(buffer, 42, 8, 0));
        Assert.Equal(0x2A, buffer[0]);

        var pos = 0;
        Assert.Equal(1337, HpackDecoder.ReadInteger(Hex("1f9a0a"), ref pos, 5));
        Assert.Equal(3, pos);
        pos = 0;
        Assert.Equal(int.MaxValue, HpackDecoder.ReadInteger(Hex("7f80ffffff07"), ref pos, 7)); // 127 + 2^31 - 128
    }

    [Fact]
    public void C2_1_LiteralWithIndexing()
    {
        var decoder = new HpackDecoder();
        var fields = Decode(decoder, Hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"));
        Assert.Equal([(0, "custom-key", "custom-header")], fields);
        Assert.Equal([("custom-key", "custom-header")], Table(decoder));
        Assert.Equal(55, decoder.DynamicTableSize);
    }

    [Fact]
    public void C2_2_LiteralWithoutIndexing()
    {
        var decoder = new HpackDecoder();
        Assert.Equal([(4, ":path", "/sample/path")], Decode(decoder, Hex("040c 2f73 616d 706c 652f 7061 7468")));
        Assert.Equal(0, decoder.DynamicTableCount);
        Assert.Equal(0, decoder.DynamicTableSize);
    }

    [Fact]
    public void C2_3_LiteralNeverIndexed()
    {
        var decoder = new HpackDecoder();
        Assert.Equal([(0, "password", "secret")], Decode(decoder, Hex("1008 7061 7373 776f 7264 0673 6563 7265 74")));
        Assert.Equal(0, decoder.DynamicTableCount);
    }

    [Fact]
    public void C2_4_Indexed()
    {
        var decoder = new HpackDecoder();
        Assert.Equal([(2, ":method", "GET")], Decode(decoder, Hex("82")));
        Assert.Equal(0, decoder.DynamicTableCount);
    }

    [Fact]
    public void StaticIndex_IsTheFirstEntryOfTheName()
    {
        var decoder = new HpackDecoder();
        Assert.Equal(
            [(2, ":method", "POST"), (4, ":path", "/index.html"), (6, ":scheme", "https"), (8, ":status", "500"),
                (16, "accept-encoding", "gzip, deflate"), (17, "accept-language", "")],
            Decode(decoder, [0x83, 0x85, 0x87, 0x8E, 0x90, 0x91]));
        // A literal with name index 5 (and the dynamic entry it adds) is :path too.
        Assert.Equal([(4, ":path", "/a"), (4, ":path", "/a")], Decode(decoder, [0x45, 0x02, .. "/a"u8, 0xBE]));
    }

    private static readonly string[] RequestsPlain =
    [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];

    private static readonly string[] RequestsHuffman =
    [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];

    [Theory]
    [InlineData(false)] // C.3
    [InlineData(true)] // C.4
    public void C3_C4_Requests_OneDecoder(bool huffman)
    {
        var blocks = huffman ? RequestsHuffman : RequestsPlain;
        var decoder = new HpackDecoder();

        Assert.Equal(
            [(2, ":method", "GET"), (6, ":scheme", "http"), (4, ":path", "/"), (1, ":authority", "www.example.com")],
            Decode(decoder, Hex(blocks[0])));
        Assert.Equal([(":authority", "www.example.com")], Table(decoder));
        Assert.Equal(57, decoder.DynamicTableSize);

        // The :authority field now comes from the dynamic table (index 62), yet reports the static name index 1.
        Assert.Equal(
            [(2, ":method", "GET"), (6, ":scheme", "http"), (4, ":path", "/"), (1, ":authority", "www.example.com"),
                (24, "cache-control", "no-cache")],
            Decode(decoder, Hex(blocks[1])));
        Assert.Equal([("cache-control", "no-cache"), (":authority", "www.example.com")], Table(decoder));
        Assert.Equal(110, decoder.DynamicTableSize);

        Assert.Equal(
            [(2, ":method", "GET"), (6, ":scheme", "https"), (4, ":path", "/index.html"),
                (1, ":authority", "www.example.com"), (0, "custom-key", "custom-value")],
            Decode(decoder, Hex(blocks[2])));
        Assert.Equal(
            [("custom-key", "custom-value"), ("cache-control", "no-cache"), (":authority", "www.example.com")],
            Table(decoder));
        Assert.Equal(164, decoder.DynamicTableSize);
    }

    private static readonly string[] ResponsesPlain =
    [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32"
            + "3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0 5a04 677a 6970"
            + "7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851 5745 4f49 553b 206d 6178 2d61"
            + "6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ];

    private static readonly string[] ResponsesHuffman =
    [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad"
            + "1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2"
            + "e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ];

    [Theory]
    [InlineData(false)] // C.5
    [InlineData(true)] // C.6
    public void C5_C6_Responses_TableSize256_Evict(bool huffman)
    {
        var blocks = huffman ? ResponsesHuffman : ResponsesPlain;
        var decoder = new HpackDecoder(maxDynamicTableSize: 256);
        const string Date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
        const string Date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
        const string Location = "https://www.example.com";
        const string Cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

        Assert.Equal(
            [(8, ":status", "302"), (24, "cache-control", "private"), (33, "date", Date1), (46, "location", Location)],
            Decode(decoder, Hex(blocks[0])));
        Assert.Equal(
            [("location", Location), ("date", Date1), ("cache-control", "private"), (":status", "302")],
            Table(decoder));
        Assert.Equal(222, decoder.DynamicTableSize);

        Assert.Equal(
            [(8, ":status", "307"), (24, "cache-control", "private"), (33, "date", Date1), (46, "location", Location)],
            Decode(decoder, Hex(blocks[1])));
        Assert.Equal(
            [(":status", "307"), ("location", Location), ("date", Date1), ("cache-control", "private")],
            Table(decoder));
        Assert.Equal(222, decoder.DynamicTableSize);

        Assert.Equal(
            [(8, ":status", "200"), (24, "cache-control", "private"), (33, "date", Date2), (46, "location", Location),
                (26, "content-encoding", "gzip"), (55, "set-cookie", Cookie)],
            Decode(decoder, Hex(blocks[2])));
        Assert.Equal([("set-cookie", Cookie), ("content-encoding", "gzip"), ("date", Date2)], Table(decoder));
        Assert.Equal(215, decoder.DynamicTableSize);
    }

    // ---- Dynamic table ----

    [Fact]
    public void DynamicEntry_WithStaticName_KeepsStaticIndex()
    {
        var decoder = new HpackDecoder();
        Assert.Equal([(4, ":path", "/abcd")], Decode(decoder, [0x44, 0x05, .. "/abcd"u8]));
        Assert.Equal([(4, ":path", "/abcd")], Decode(decoder, [0xBE]));
        // A literal whose name is that dynamic entry's still reports 4, and so does the entry it adds.
        Assert.Equal([(4, ":path", "/x")], Decode(decoder, [0x7E, 0x02, .. "/x"u8]));
        Assert.Equal([(4, ":path", "/x"), (4, ":path", "/abcd")], Decode(decoder, [0xBE, 0xBF]));
        // A literal (not indexed) name is 0 even when it spells a static name.
        Assert.Equal([(0, ":path", "/y")], Decode(decoder, [0x00, 0x05, .. ":path"u8, 0x02, .. "/y"u8]));
    }

    [Fact]
    public void Insert_NameOfAnEntryTheInsertionEvicts_KeepsTheName()
    {
        // RFC 7541 §4.4: the new entry's name is that of an entry that must go to make room (and whose bytes the new
        // entry's then overwrite).
        var decoder = new HpackDecoder(maxDynamicTableSize: 100);
        Decode(decoder, [0x40, 0x05, .. "aaaaa"u8, 0x00]); // 37
        Decode(decoder, [0x40, 0x05, .. "bbbbb"u8, 0x00]); // 37
        var value = new string('z', 30);
        Assert.Equal([(0, "bbbbb", value)], Decode(decoder, [0x7E, 30, .. Encoding.ASCII.GetBytes(value)])); // 67
        Assert.Equal([("bbbbb", value)], Table(decoder));
        Assert.Equal(67, decoder.DynamicTableSize);
    }

    [Fact]
    public void EntryLargerThanTable_EmptiesIt_AndIsNotAdded()
    {
        var decoder = new HpackDecoder(maxDynamicTableSize: 64);
        Decode(decoder, [0x40, 0x01, (byte)'a', 0x01, (byte)'b']);
        Assert.Equal(1, decoder.DynamicTableCount);
        var value = new string('v', 40);
        Assert.Equal([(0, "big", value)], Decode(decoder, [0x40, 0x03, .. "big"u8, 40, .. Encoding.ASCII.GetBytes(value)]));
        Assert.Equal(0, decoder.DynamicTableCount);
        Assert.Equal(0, decoder.DynamicTableSize);
    }

    [Fact]
    public void ManyInsertions_EvictAndCompact_TableMatchesModel()
    {
        var decoder = new HpackDecoder(maxDynamicTableSize: 256);
        var model = new List<(string Name, string Value)>(); // newest first
        var random = new Random(7);
        for (var i = 0; i < 2000; i++)
        {
            var name = "n" + i;
            var value = new string((char)('a' + i % 26), random.Next(0, 120));
            byte[] block =
            [
                0x40, (byte)name.Length, .. Encoding.ASCII.GetBytes(name),
                (byte)value.Length, .. Encoding.ASCII.GetBytes(value),
            ];
            Decode(decoder, block);
            model.Insert(0, (name, value));
            var size = 0;
            for (var j = 0; j < model.Count; j++)
            {
                size += model[j].Name.Length + model[j].Value.Length + 32;
                if (size > 256)
                {
                    model.RemoveRange(j, model.Count - j);
                    break;
                }
            }
            Assert.Equal(model, Table(decoder));
        }
    }

    [Fact]
    public void SizeUpdates_AtStart_UpToTwo_Evict()
    {
        var decoder = new HpackDecoder();
        Decode(decoder, Hex(RequestsPlain[0]));
        Decode(decoder, Hex(RequestsPlain[1]));
        Assert.Equal(110, decoder.DynamicTableSize);

        // Down to 60 (evicts :authority, keeps cache-control) then back up to 4096, then a field.
        var block = new byte[16];
        var length = HpackEncoder.WriteDynamicTableSizeUpdate(block, 60);
        length += HpackEncoder.WriteDynamicTableSizeUpdate(block.AsSpan(length), 4096);
        block[length++] = 0x82;
        Assert.Equal([(2, ":method", "GET")], Decode(decoder, block[..length]));
        Assert.Equal([("cache-control", "no-cache")], Table(decoder));
        Assert.Equal(4096, decoder.DynamicTableCapacity);

        Decode(decoder, [0x20]);
        Assert.Equal(0, decoder.DynamicTableCount);
        Assert.Equal(0, decoder.DynamicTableCapacity);
    }

    [Fact]
    public void MaxDynamicTableSize_Lowered_RequiresSizeUpdate_Raised_AllowsLargerTable()
    {
        var decoder = new HpackDecoder();
        Decode(decoder, Hex(RequestsPlain[0]));
        Decode(decoder, Hex(RequestsPlain[1]));
        decoder.MaxDynamicTableSize = 100;
        Assert.Equal(1, decoder.DynamicTableCount); // evicted at once
        FailsWith("size update", [0x82], decoder);

        decoder = new HpackDecoder();
        Decode(decoder, Hex(RequestsPlain[0]));
        decoder.MaxDynamicTableSize = 100;
        Assert.Equal([(2, ":method", "GET")], Decode(decoder, [0x3F, 100 - 31, 0x82]));
        Assert.Equal([(":authority", "www.example.com")], Table(decoder));

        // Raised past the initial buffers: existing entries survive, the peer may grow the table to the new limit.
        decoder.MaxDynamicTableSize = 10_000;
        var block = new byte[8];
        var length = HpackEncoder.WriteDynamicTableSizeUpdate(block, 10_000);
        Decode(decoder, block[..length]);
        var value = new string('q', 100);
        for (var i = 0; i < 60; i++)
        {
            Decode(decoder, [0x40, 0x01, (byte)'k', 100, .. Encoding.ASCII.GetBytes(value)]);
        }
        Assert.Equal(61, decoder.DynamicTableCount); // 60 * 133 + 57 <= 10000
        Assert.Equal(("k", value), Table(decoder)[0]);
        Assert.Equal((":authority", "www.example.com"), Table(decoder)[60]);
        DecodeFails(decoder, [0x3F, 0xF2, 0x4D]); // 10001
    }

    // ---- Errors ----

    [Fact]
    public void Error_IndexZero()
    {
        FailsWith("index 0", [0x80]);
        FailsWith("index 0", [0x82, 0x80]);
    }

    [Fact]
    public void Error_IndexPastTheTable()
    {
        FailsWith("index 62", [0xBE]);
        // Literal with an indexed name past the table.
        FailsWith("index 62", [0x7E, 0x01, (byte)'v']);
        var decoder = new HpackDecoder();
        Decode(decoder, Hex(RequestsPlain[0]));
        Assert.Equal([(1, ":authority", "www.example.com")], Decode(decoder, [0xBE]));
        FailsWith("index 63", [0xBF], decoder);
    }

    [Fact]
    public void Error_TruncatedInteger()
    {
        FailsWith("truncated integer", [0xFF]);
        FailsWith("truncated integer", [0xFF, 0x80]);
        // A string length cut short.
        FailsWith("truncated integer", [0x00, 0x7F]);
    }

    [Fact]
    public void Error_IntegerOverflow()
    {
        // 2^32 + 126: five continuation bytes, too large for an int.
        FailsWith("overflow", [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
        // int.MaxValue + 1.
        FailsWith("overflow", [0xFF, 0x81, 0xFF, 0xFF, 0xFF, 0x07]);
        // A small value padded with zero continuations past five bytes.
        FailsWith("overflow", [0xFF, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]);
    }

    [Fact]
    public void Error_TruncatedString()
    {
        FailsWith("truncated string", [0x00, 0x05, (byte)'a', (byte)'b']);
        FailsWith("truncated string", [0x04, 0x03, (byte)'/']);
        FailsWith("string missing", [0x04]);
        FailsWith("string missing", [0x00, 0x01, (byte)'a']);
    }

    [Fact]
    public void Error_HuffmanPaddingLongerThan7Bits()
    {
        // "a" is 00011: 0x1F is "a" + 111 padding (fine); a whole byte of ones more is 11 bits of padding.
        Assert.Equal([(4, ":path", "a")], Decode(new HpackDecoder(), [0x04, 0x81, 0x1F]));
        FailsWith("padding", [0x04, 0x82, 0x1F, 0xFF]);
        FailsWith("padding", [0x04, 0x81, 0xFF]);
    }

    [Fact]
    public void Error_HuffmanPaddingNotOnes()
    {
        FailsWith("padding", [0x04, 0x81, 0x18]); // 00011 000
        FailsWith("padding", [0x04, 0x81, 0x1E]); // 00011 110
    }

    [Fact]
    public void Error_HuffmanEosInString()
    {
        // 30 ones is EOS, here followed by two more padding bits.
        FailsWith("EOS", [0x04, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]);
        // "a" (00011), EOS, then "a" again and padding: 5 + 30 + 5 bits.
        FailsWith("EOS", [0x04, 0x85, 0x1F, 0xFF, 0xFF, 0xFF, 0xF0]);
    }

    [Fact]
    public void Error_SizeUpdateAboveMax()
    {
        var block = new byte[8];
        var length = HpackEncoder.WriteDynamicTableSizeUpdate(block, 4097);
        FailsWith("above", block[..length]);
        length = HpackEncoder.WriteDynamicTableSizeUpdate(block, 257);
        FailsWith("above", block[..length], new HpackDecoder(maxDynamicTableSize: 256));
        length = HpackEncoder.WriteDynamicTableSizeUpdate(block, 256);
        Decode(new HpackDecoder(maxDynamicTableSize: 256), block[..length]);
    }

    [Fact]
    public void Error_SizeUpdateAfterField()
    {
        FailsWith("after a header field", [0x82, 0x20]);
        FailsWith("after a header field", [0x20, 0x82, 0x3F, 0x01]);
    }

    // ---- Header list size ----

    [Fact]
    public void HeaderListTooLarge_DistinctError_TableStillUpdated()
    {
        var decoder = new HpackDecoder(maxHeaderListSize: 100);
        var value = new string('v', 80);
        var fields = new List<(int, string, string)>();
        var sink = new ListSink(fields);
        byte[] block =
        [
            0x40, 0x01, (byte)'a', 0x01, (byte)'b', // 34: delivered
            0x40, 0x05, .. "x-big"u8, 80, .. Encoding.ASCII.GetBytes(value), // 117: crosses 100
            0x40, 0x01, (byte)'c', 0x01, (byte)'d', // past the limit: not delivered, but added
            0x82, // not delivered
        ];
        var error = Assert.Throws<HpackException>(() => decoder.Decode(block, ref sink));
        Assert.Equal(HpackErrorKind.HeaderListTooLarge, error.Kind);
        Assert.Equal([(0, "a", "b")], fields);

        // All three entries were added: the next block can refer to them.
        Assert.Equal(3, decoder.DynamicTableCount);
        Assert.Equal([(0, "c", "d"), (0, "a", "b")], Decode(decoder, [0xBE, 0xC0]));
        DecodeFails(decoder, [0xBF], HpackErrorKind.HeaderListTooLarge); // x-big alone is still too large
        Assert.Equal([(0, "a", "b"), (2, ":method", "GET")], Decode(decoder, [0xC0, 0x82]));
    }

    [Fact]
    public void HeaderListTooLarge_HugeHuffmanString_NotBuffered_IndexingEmptiesTable()
    {
        var decoder = new HpackDecoder(maxDynamicTableSize: 256, maxHeaderListSize: 300);
        Decode(decoder, [0x40, 0x01, (byte)'a', 0x01, (byte)'b']);
        var plain = Encoding.ASCII.GetBytes(new string('a', 1000));
        var huffman = new byte[HpackHuffman.GetEncodedLength(plain)];
        Assert.Equal(huffman.Length, HpackHuffman.Encode(plain, huffman)); // 625 bytes: more than the scratch bound
        var block = new byte[huffman.Length + 8];
        block[0] = 0x7E; // literal with indexing, name = dynamic 62 ("a")
        var length = 1 + HpackEncoder.WriteInteger(block.AsSpan(1), huffman.Length, 7, 0x80);
        huffman.CopyTo(block, length);
        length += huffman.Length;
        block[length++] = 0x82;

        DecodeFails(decoder, block[..length], HpackErrorKind.HeaderListTooLarge);
        Assert.Equal(0, decoder.DynamicTableCount);
        Assert.Equal([(2, ":method", "GET")], Decode(decoder, [0x82]));
        // Broken Huffman in such a string is still a compression error: the same string with EOS appended.
        byte[] broken = [.. huffman, 0xFF, 0xFF, 0xFF, 0xFF];
        block[0] = 0x04; // :path, without indexing
        length = 1 + HpackEncoder.WriteInteger(block.AsSpan(1), broken.Length, 7, 0x80);
        decoder = new HpackDecoder(maxDynamicTableSize: 256, maxHeaderListSize: 300);
        FailsWith("EOS", [.. block[..length], .. broken], decoder);
    }

    // ---- Huffman ----

    [Fact]
    public void HuffmanTable_IsTheCanonicalCodeOfTheRfc()
    {
        // RFC 7541's code is canonical: ordered by (length, symbol), each code is the previous plus one, shifted to
        // its length. A mistyped code or length breaks the chain.
        var symbols = new int[257];
        for (var i = 0; i < symbols.Length; i++)
        {
            symbols[i] = i;
        }
        var lengths = HpackHuffman.Lengths.ToArray();
        var codes = HpackHuffman.Codes.ToArray();
        Array.Sort(symbols, (a, b) => lengths[a] != lengths[b] ? lengths[a].CompareTo(lengths[b]) : a.CompareTo(b));
        Assert.Equal(0u, codes[symbols[0]]);
        for (var i = 1; i < symbols.Length; i++)
        {
            var previous = symbols[i - 1];
            var symbol = symbols[i];
            Assert.Equal((codes[previous] + 1) << (lengths[symbol] - lengths[previous]), codes[symbol]);
        }
        Assert.Equal(256, symbols[^1]); // EOS: the last and longest, all ones
        Assert.Equal(0x3FFFFFFFu, codes[256]);
        Assert.Equal(30, lengths[256]);
        Assert.Equal(5, lengths['0']);
        Assert.Equal(0x1ff8u, codes[0]);
    }

    [Fact]
    public void Huffman_EveryByte_RoundTrips()
    {
        var plain = new byte[256 * 3];
        for (var i = 0; i < plain.Length; i++)
        {
            plain[i] = (byte)(i * 7 + i / 256);
        }
        var encoded = new byte[HpackHuffman.GetEncodedLength(plain)];
        Assert.Equal(encoded.Length, HpackHuffman.Encode(plain, encoded));
        var decoded = new byte[HpackHuffman.MaxDecodedLength(encoded.Length)];
        var length = HpackHuffman.Decode(encoded, decoded);
        Assert.Equal(plain, decoded[..length]);

        // "www.example.com" from C.4.1.
        var www = "www.example.com"u8;
        var wwwEncoded = new byte[HpackHuffman.GetEncodedLength(www)];
        HpackHuffman.Encode(www, wwwEncoded);
        Assert.Equal(Hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"), wwwEncoded);
    }

    // ---- Encoder ----

    [Theory]
    [InlineData(200, 8, "88")]
    [InlineData(204, 8, "89")]
    [InlineData(206, 8, "8a")]
    [InlineData(304, 8, "8b")]
    [InlineData(400, 8, "8c")]
    [InlineData(404, 8, "8d")]
    [InlineData(500, 8, "8e")]
    [InlineData(503, 8, "0803 3530 33")]
    [InlineData(299, 8, "0803 3239 39")]
    [InlineData(101, 8, "0803 3130 31")]
    public void WriteStatus_RoundTrips(int status, int staticIndex, string hex)
    {
        var buffer = new byte[HpackEncoder.GetMaxLength(0, 3)];
        var length = HpackEncoder.WriteStatus(buffer, status);
        Assert.Equal(Hex(hex), buffer[..length]);
        var digits = status.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal([(staticIndex, ":status", digits)], Decode(new HpackDecoder(), buffer[..length]));
    }

    [Fact]
    public void WriteStatus_OutOfRange_Throws()
    {
        var buffer = new byte[16];
        Assert.Throws<ArgumentOutOfRangeException>(() => HpackEncoder.WriteStatus(buffer, 99));
        Assert.Throws<ArgumentOutOfRangeException>(() => HpackEncoder.WriteStatus(buffer, 1000));
    }

    [Fact]
    public void Encoder_Fields_RoundTripThroughDecoder()
    {
        var longValue = new string('x', 300); // a length needing continuation bytes
        var buffer = new byte[1024];
        var length = 0;
        length += HpackEncoder.WriteIndexed(buffer.AsSpan(length), 2);
        length += HpackEncoder.WriteLiteralWithoutIndexing(buffer.AsSpan(length), 31, "text/html"u8);
        length += HpackEncoder.WriteLiteralWithoutIndexing(buffer.AsSpan(length), 54, "portico");
        length += HpackEncoder.WriteLiteralWithoutIndexing(buffer.AsSpan(length), "x-custom"u8, "v1"u8);
        length += HpackEncoder.WriteLiteralWithoutIndexing(buffer.AsSpan(length), "X-Custom-Header", "caf\u00e9 \u20ac");
        var longBytes = Encoding.ASCII.GetBytes(longValue);
        length += HpackEncoder.WriteLiteralWithoutIndexing(buffer.AsSpan(length), "x-long"u8, longBytes);
        length += HpackEncoder.WriteLiteralWithoutIndexing(buffer.AsSpan(length), "x-empty", "");

        var decoder = new HpackDecoder();
        Assert.Equal(
            [(2, ":method", "GET"), (31, "content-type", "text/html"), (54, "server", "portico"), (0, "x-custom", "v1"),
                (0, "x-custom-header", "caf\u00e9 ?"), (0, "x-long", longValue), (0, "x-empty", "")],
            Decode(decoder, buffer[..length]));
        Assert.Equal(0, decoder.DynamicTableCount); // nothing indexed

        // Exact bytes of a literal name: 0x00, length, name, length, value.
        length = HpackEncoder.WriteLiteralWithoutIndexing(buffer, "X-A", "b");
        Assert.Equal(Hex("00 03 782d61 01 62"), buffer[..length]);
    }

    [Fact]
    public void Encoder_StaysWithinGetMaxLength_AndRejectsShortDestinations()
    {
        foreach (var (nameLength, valueLength) in new[] { (0, 0), (1, 126), (126, 127), (127, 128), (5000, 70_000) })
        {
            var name = new string('n', nameLength);
            var value = new string('v', valueLength);
            var max = HpackEncoder.GetMaxLength(nameLength, valueLength);
            var buffer = new byte[max];
            Assert.True(HpackEncoder.WriteLiteralWithoutIndexing(buffer, name, value) <= max);
            var indexedMax = HpackEncoder.GetMaxLength(0, valueLength);
            Assert.True(HpackEncoder.WriteLiteralWithoutIndexing(buffer, 61, value) <= indexedMax);
            Assert.Throws<ArgumentException>(() => HpackEncoder.WriteLiteralWithoutIndexing(new byte[max - 1], name, value));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => HpackEncoder.WriteLiteralWithoutIndexing(new byte[16], 62, "v"u8));
        Assert.Throws<ArgumentOutOfRangeException>(() => HpackEncoder.WriteLiteralWithoutIndexing(new byte[16], 0, "v"u8));
    }

    [Fact]
    public void StaticNameIndex_KnownNamesAndMisses()
    {
        Assert.Equal(1, HpackEncoder.StaticNameIndex(":authority"u8));
        Assert.Equal(2, HpackEncoder.StaticNameIndex(":method"u8));
        Assert.Equal(4, HpackEncoder.StaticNameIndex(":path"u8));
        Assert.Equal(8, HpackEncoder.StaticNameIndex(":status"u8));
        Assert.Equal(16, HpackEncoder.StaticNameIndex("accept-encoding"u8));
        Assert.Equal(24, HpackEncoder.StaticNameIndex("cache-control"u8));
        Assert.Equal(28, HpackEncoder.StaticNameIndex("content-length"u8));
        Assert.Equal(31, HpackEncoder.StaticNameIndex("content-type"u8));
        Assert.Equal(33, HpackEncoder.StaticNameIndex("date"u8));
        Assert.Equal(54, HpackEncoder.StaticNameIndex("server"u8));
        Assert.Equal(61, HpackEncoder.StaticNameIndex("www-authenticate"u8));
        Assert.Equal(0, HpackEncoder.StaticNameIndex("x-request-id"u8));
        Assert.Equal(0, HpackEncoder.StaticNameIndex("content-typf"u8));
        Assert.Equal(0, HpackEncoder.StaticNameIndex("Content-Type"u8)); // the byte overload wants lowercase
        Assert.Equal(0, HpackEncoder.StaticNameIndex(""u8));
        Assert.Equal(0, HpackEncoder.StaticNameIndex(new byte[300]));

        Assert.Equal(31, HpackEncoder.StaticNameIndex("Content-Type"));
        Assert.Equal(28, HpackEncoder.StaticNameIndex("CONTENT-LENGTH"));
        Assert.Equal(20, HpackEncoder.StaticNameIndex("Access-Control-Allow-Origin"));
        Assert.Equal(0, HpackEncoder.StaticNameIndex("Content\rType")); // '\r' | 0x20 is '-', but not a letter
        Assert.Equal(0, HpackEncoder.StaticNameIndex("X-Powered-By"));
        Assert.Equal(0, HpackEncoder.StaticNameIndex(""));

        // Every static name maps to its first entry.
        for (var i = 1; i <= HpackStaticTable.Count; i++)
        {
            var index = HpackEncoder.StaticNameIndex(HpackStaticTable.Names[i]);
            var sameName = HpackStaticTable.Names[index].AsSpan().SequenceEqual(HpackStaticTable.Names[i]);
            Assert.True(index <= i && sameName, $"{i} -> {index}");
        }
    }

    // ---- Allocations ----

    [Fact]
    public void Decode_AfterWarmUp_AllocatesNothing()
    {
        var decoder = new HpackDecoder();
        Decode(decoder, Hex(RequestsHuffman[0]));
        Decode(decoder, Hex(RequestsHuffman[1]));
        // C.4.3: indexed fields (static and dynamic), and a Huffman literal added to the table (so, over the
        // iterations, evictions and compactions too).
        var block = Hex(RequestsHuffman[2]);
        var total = 0;
        AllocationAssert.Zero(() =>
        {
            var sink = new CountingSink();
            decoder.Decode(block, ref sink);
            total += sink.Fields;
        });
        Assert.True(total > 0);
        Assert.True(decoder.DynamicTableCount > 70);

        var encoded = new byte[64];
        AllocationAssert.Zero(() =>
        {
            var length = HpackEncoder.WriteStatus(encoded, 503);
            length += HpackEncoder.WriteLiteralWithoutIndexing(encoded.AsSpan(length), "Content-Type", "text/html");
            total += length + HpackEncoder.StaticNameIndex("Content-Type");
        });
    }
}
