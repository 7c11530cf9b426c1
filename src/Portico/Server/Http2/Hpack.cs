using System.Diagnostics.CodeAnalysis;

namespace Portico.Server.Http2;

/// <summary>
/// Receives the header fields of one header block from <see cref="HpackDecoder.Decode{TSink}"/>. A struct (or ref
/// struct) sink is called without boxing or an interface dispatch, which is why the decoder is generic over it.
/// </summary>
internal interface IHpackSink
{
    /// <summary>
    /// One decoded header field. <paramref name="staticIndex"/> identifies a name that came from the RFC 7541 static
    /// table (directly, or through a dynamic-table entry that was added with a static name), otherwise it is 0: the
    /// server can then recognise <c>:path</c>, <c>:method</c> and friends by number instead of comparing bytes. It is
    /// the lowest static index with that name, whichever entry the peer used (<c>:method</c> is always 2, <c>:path</c>
    /// 4, <c>:scheme</c> 6, <c>:status</c> 8, <c>accept-encoding</c> 16), so one number per name is enough to check.
    /// The spans are valid only during the call: they point into the header block, the decoder's scratch buffer or
    /// its dynamic table.
    /// </summary>
    void OnHeader(int staticIndex, ReadOnlySpan<byte> name, ReadOnlySpan<byte> value);
}

/// <summary>Why an <see cref="HpackException"/> was thrown: decides between a connection error and a 431.</summary>
internal enum HpackErrorKind
{
    /// <summary>
    /// The block is malformed (RFC 9113 §4.3: COMPRESSION_ERROR, a connection error): the decoder's dynamic table no
    /// longer matches the peer's, so the connection cannot go on.
    /// </summary>
    CompressionError,

    /// <summary>
    /// The block decoded fine, but its header list is larger than allowed. The dynamic table was kept up to date, so
    /// only the stream fails (the server answers 431) and the connection goes on.
    /// </summary>
    HeaderListTooLarge,
}

/// <summary>An HPACK decoding failure; <see cref="Kind"/> says whether the connection can survive it.</summary>
internal sealed class HpackException : Exception
{
    public HpackException(HpackErrorKind kind, string message)
        : base(message)
    {
        Kind = kind;
    }

    /// <summary>Compression error (connection error) or header list too large (stream error, 431).</summary>
    public HpackErrorKind Kind { get; }
}

/// <summary>
/// The RFC 7541 Appendix A static table, as bytes (index 0 is unused and empty, so the RFC's numbers index the
/// arrays directly).
/// </summary>
internal static class HpackStaticTable
{
    /// <summary>The number of entries (61); dynamic-table indexes start after it.</summary>
    public const int Count = 61;

    /// <summary>The entry names, lowercase ASCII; <c>Names[0]</c> is empty.</summary>
    public static readonly byte[][] Names;

    /// <summary>The entry values (empty for most); <c>Values[0]</c> is empty.</summary>
    public static readonly byte[][] Values;

    /// <summary>
    /// For each index, the lowest index with the same name (5 → 4 for <c>:path</c>, 9..14 → 8 for <c>:status</c>).
    /// </summary>
    public static readonly byte[] FirstNameIndex;

    // Entries in StaticNameIndex's lookup: by name length, the indexes of the first entry of each distinct name, in
    // order. ByLengthStart[n]..ByLengthStart[n + 1] is the range of ByLengthIndexes for names of length n.
    private static readonly int[] ByLengthStart;
    private static readonly byte[] ByLengthIndexes;

    static HpackStaticTable()
    {
        string[] pairs =
        [
            ":authority", "", ":method", "GET", ":method", "POST", ":path", "/", ":path", "/index.html",
            ":scheme", "http", ":scheme", "https", ":status", "200", ":status", "204", ":status", "206",
            ":status", "304", ":status", "400", ":status", "404", ":status", "500", "accept-charset", "",
            "accept-encoding", "gzip, deflate", "accept-language", "", "accept-ranges", "", "accept", "",
            "access-control-allow-origin", "", "age", "", "allow", "", "authorization", "", "cache-control", "",
            "content-disposition", "", "content-encoding", "", "content-language", "", "content-length", "",
            "content-location", "", "content-range", "", "content-type", "", "cookie", "", "date", "", "etag", "",
            "expect", "", "expires", "", "from", "", "host", "", "if-match", "", "if-modified-since", "",
            "if-none-match", "", "if-range", "", "if-unmodified-since", "", "last-modified", "", "link", "",
            "location", "", "max-forwards", "", "proxy-authenticate", "", "proxy-authorization", "", "range", "",
            "referer", "", "refresh", "", "retry-after", "", "server", "", "set-cookie", "",
            "strict-transport-security", "", "transfer-encoding", "", "user-agent", "", "vary", "", "via", "",
            "www-authenticate", "",
        ];
        Names = new byte[Count + 1][];
        Values = new byte[Count + 1][];
        FirstNameIndex = new byte[Count + 1];
        Names[0] = [];
        Values[0] = [];
        var longest = 0;
        for (var i = 1; i <= Count; i++)
        {
            Names[i] = System.Text.Encoding.ASCII.GetBytes(pairs[(i - 1) * 2]);
            Values[i] = System.Text.Encoding.ASCII.GetBytes(pairs[(i - 1) * 2 + 1]);
            longest = Math.Max(longest, Names[i].Length);
        }

        // A repeated name is always right after the entry before it with that name.
        for (var i = 1; i <= Count; i++)
        {
            FirstNameIndex[i] = IsRepeat(i) ? FirstNameIndex[i - 1] : (byte)i;
        }

        // Counting sort of the distinct names by length.
        ByLengthStart = new int[longest + 2];
        for (var i = 1; i <= Count; i++)
        {
            if (!IsRepeat(i))
            {
                ByLengthStart[Names[i].Length + 1]++;
            }
        }
        for (var n = 1; n < ByLengthStart.Length; n++)
        {
            ByLengthStart[n] += ByLengthStart[n - 1];
        }
        ByLengthIndexes = new byte[ByLengthStart[^1]];
        var fill = (int[])ByLengthStart.Clone();
        for (var i = 1; i <= Count; i++)
        {
            if (!IsRepeat(i))
            {
                ByLengthIndexes[fill[Names[i].Length]++] = (byte)i;
            }
        }

        static bool IsRepeat(int i) => Names[i - 1].AsSpan().SequenceEqual(Names[i]);
    }

    /// <summary>The lowest static index whose name is <paramref name="lowercaseName"/> (exact bytes), or 0.</summary>
    public static int NameIndex(ReadOnlySpan<byte> lowercaseName)
    {
        var length = lowercaseName.Length;
        if ((uint)length + 1 >= (uint)ByLengthStart.Length)
        {
            return 0;
        }
        for (var i = ByLengthStart[length]; i < ByLengthStart[length + 1]; i++)
        {
            int index = ByLengthIndexes[i];
            if (lowercaseName.SequenceEqual(Names[index]))
            {
                return index;
            }
        }
        return 0;
    }

    /// <summary>The lowest static index whose name is <paramref name="name"/> ignoring ASCII case, or 0.</summary>
    public static int NameIndex(ReadOnlySpan<char> name)
    {
        var length = name.Length;
        if ((uint)length + 1 >= (uint)ByLengthStart.Length)
        {
            return 0;
        }
        for (var i = ByLengthStart[length]; i < ByLengthStart[length + 1]; i++)
        {
            int index = ByLengthIndexes[i];
            var candidate = Names[index];
            var j = 0;
            while (j < candidate.Length && IsSameIgnoringCase(name[j], candidate[j]))
            {
                j++;
            }
            if (j == candidate.Length)
            {
                return index;
            }
        }
        return 0;
    }

    // Only a letter may differ in the 0x20 bit: (c | 0x20) alone would also match '\r' (0x0D) to '-' (0x2D).
    private static bool IsSameIgnoringCase(char c, byte lower) =>
        c == lower || ((c | 0x20) == lower && lower is >= (byte)'a' and <= (byte)'z');
}

/// <summary>
/// The RFC 7541 Appendix B Huffman code, and a table-driven decoder for it. Decoding walks the input a nibble at a time
/// through a 256-state machine (one state per inner node of the code tree) built once from the code table: each step
/// is one table load, instead of eight branchy tree steps per byte. Since the shortest code is 5 bits, a nibble emits
/// at most one symbol.
/// </summary>
internal static class HpackHuffman
{
    /// <summary>The code of each symbol 0..256 (256 is EOS), right-aligned; RFC 7541 Appendix B "code as hex".</summary>
    internal static ReadOnlySpan<uint> Codes =>
    [
        0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7, // 0
        0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec, // 8
        0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3, // 16
        0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb, // 24
        0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, // 32 ' '
        0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18, // 40 '('
        0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, // 48 '0'
        0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc, // 56 '8'
        0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, // 64 '@'
        0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, // 72 'H'
        0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72, // 80 'P'
        0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22, // 88 'X'
        0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26, // 96 '`'
        0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7, // 104 'h'
        0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78, // 112 'p'
        0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc, // 120 'x'
        0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9, // 128
        0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf, // 136
        0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3, // 144
        0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, // 152
        0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, // 160
        0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, // 168
        0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, // 176
        0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, // 184
        0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec, // 192
        0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed, // 200
        0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2, // 208
        0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5, // 216
        0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3, // 224
        0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, // 232
        0x3ffffeb, 0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, // 240
        0x7ffffeb, 0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee, // 248
        0x3fffffff, // 256 EOS
    ];

    /// <summary>The code length in bits of each symbol 0..256; RFC 7541 Appendix B "len in bits".</summary>
    internal static ReadOnlySpan<byte> Lengths =>
    [
        13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0
        28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16
        6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 32 ' '
        5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 48 '0'
        13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 64 '@'
        7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 80 'P'
        15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 96 '`'
        6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 112 'p'
        20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128
        24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144
        22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160
        21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176
        26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192
        19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208
        20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224
        26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240
        30, // 256 EOS
    ];

    private const int Eos = 256;

    // A decode-table entry: bits 0..7 the next state, 8..15 the symbol emitted, then these flags.
    private const uint Emit = 1 << 16;
    private const uint Accept = 1 << 17; // the next state may end the string: its path is 0..7 one bits (a prefix of EOS)
    private const uint Fail = 1 << 18; // the nibble completes EOS, which must not appear in a string

    // [state * 16 + nibble]; state 0 is the root of the code tree (no bits pending).
    private static readonly uint[] DecodeTable = BuildDecodeTable();

    private static uint[] BuildDecodeTable()
    {
        // The code tree: inner node n has children child[2n] (bit 0) and child[2n + 1] (bit 1); a child > 0 is an inner
        // node, < 0 the leaf of symbol -child - 1, 0 not assigned (the root is node 0, so it is nobody's child).
        var child = new short[512];
        var depth = new byte[256];
        var allOnes = new bool[256];
        allOnes[0] = true;
        var nodes = 1;
        for (var symbol = 0; symbol <= Eos; symbol++)
        {
            var code = Codes[symbol];
            int length = Lengths[symbol];
            var node = 0;
            for (var bit = length - 1; bit > 0; bit--)
            {
                var b = (int)(code >> bit) & 1;
                var next = child[2 * node + b];
                if (next < 0 || (next == 0 && nodes > 255))
                {
                    throw new InvalidOperationException($"HPACK Huffman table: the code of {symbol} is not prefix-free.");
                }
                if (next == 0)
                {
                    next = (short)nodes++;
                    child[2 * node + b] = next;
                    depth[next] = (byte)(depth[node] + 1);
                    allOnes[next] = allOnes[node] && b == 1;
                }
                node = next;
            }
            ref var leaf = ref child[2 * node + (int)(code & 1)];
            if (leaf != 0)
            {
                throw new InvalidOperationException($"HPACK Huffman table: the code of {symbol} is not prefix-free.");
            }
            leaf = (short)(-symbol - 1);
        }
        // 257 leaves in a full binary tree take exactly 256 inner nodes, each with both children assigned.
        if (nodes != 256 || Array.IndexOf(child, (short)0) >= 0)
        {
            throw new InvalidOperationException("HPACK Huffman table: the code is not complete.");
        }

        var table = new uint[256 * 16];
        for (var state = 0; state < 256; state++)
        {
            for (var nibble = 0; nibble < 16; nibble++)
            {
                var node = state;
                uint entry = 0;
                for (var bit = 3; bit >= 0; bit--)
                {
                    int next = child[2 * node + ((nibble >> bit) & 1)];
                    if (next < 0)
                    {
                        var symbol = -next - 1;
                        if (symbol == Eos)
                        {
                            entry |= Fail;
                            break;
                        }
                        entry |= Emit | (uint)symbol << 8;
                        next = 0;
                    }
                    node = next;
                }
                if (allOnes[node] && depth[node] <= 7)
                {
                    entry |= Accept;
                }
                table[state * 16 + nibble] = entry | (uint)node;
            }
        }
        return table;
    }

    /// <summary>
    /// The most bytes <paramref name="encodedLength"/> bytes of Huffman code can decode to: every code is at least 5 bits.
    /// </summary>
    public static int MaxDecodedLength(int encodedLength) => (int)((long)encodedLength * 8 / 5);

    /// <summary>
    /// Decodes <paramref name="source"/> into <paramref name="destination"/> and returns the decoded length. When that is
    /// more than <paramref name="destination"/> holds, the bytes that fit are written and the rest only counted (the
    /// input is still validated to the end), so a caller with a bounded buffer learns the real length.
    /// </summary>
    /// <exception cref="HpackException">EOS in the string, or padding longer than 7 bits or not all ones.</exception>
    public static int Decode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        var table = DecodeTable;
        var written = 0;
        var state = 0;
        var last = Accept;
        for (var i = 0; i < source.Length; i++)
        {
            var b = source[i];
            var entry = table[state << 4 | b >> 4];
            if ((entry & (Emit | Fail)) != 0)
            {
                if ((entry & Fail) != 0)
                {
                    ThrowEos();
                }
                if ((uint)written < (uint)destination.Length)
                {
                    destination[written] = (byte)(entry >> 8);
                }
                written++;
            }
            entry = table[(int)(entry & 0xFF) << 4 | b & 0xF];
            if ((entry & (Emit | Fail)) != 0)
            {
                if ((entry & Fail) != 0)
                {
                    ThrowEos();
                }
                if ((uint)written < (uint)destination.Length)
                {
                    destination[written] = (byte)(entry >> 8);
                }
                written++;
            }
            state = (int)(entry & 0xFF);
            last = entry;
        }
        if ((last & Accept) == 0)
        {
            throw new HpackException(
                HpackErrorKind.CompressionError, "HPACK: Huffman padding is longer than 7 bits or not all ones.");
        }
        return written;
    }

    /// <summary>The length in bytes of <paramref name="source"/> Huffman-encoded (the last byte padded with ones).</summary>
    public static int GetEncodedLength(ReadOnlySpan<byte> source)
    {
        long bits = 0;
        var lengths = Lengths;
        for (var i = 0; i < source.Length; i++)
        {
            bits += lengths[source[i]];
        }
        return (int)((bits + 7) >> 3);
    }

    /// <summary>
    /// Huffman-encodes <paramref name="source"/> into <paramref name="destination"/> (at least
    /// <see cref="GetEncodedLength"/> bytes) and returns the bytes written. The server sends literals unencoded (CPU
    /// over bytes); this exists for tests and for a peer-facing encoder that wants it.
    /// </summary>
    public static int Encode(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        var codes = Codes;
        var lengths = Lengths;
        ulong pending = 0; // right-aligned bits not yet written
        var count = 0;
        var written = 0;
        for (var i = 0; i < source.Length; i++)
        {
            pending = pending << lengths[source[i]] | codes[source[i]];
            count += lengths[source[i]];
            while (count >= 8)
            {
                count -= 8;
                destination[written++] = (byte)(pending >> count);
            }
        }
        if (count > 0)
        {
            destination[written++] = (byte)(pending << (8 - count) | (0xFFu >> count));
        }
        return written;
    }

    [DoesNotReturn]
    private static void ThrowEos() =>
        throw new HpackException(HpackErrorKind.CompressionError, "HPACK: Huffman-encoded string contains EOS.");
}

/// <summary>
/// Decodes HPACK header blocks (RFC 7541) for one HTTP/2 connection. Not thread-safe: a connection decodes its header
/// blocks one at a time, in order, which HPACK requires anyway. The dynamic table keeps all entry bytes in one buffer
/// (appended at the end, dropped from the front, compacted when the end is reached) and the entries in a ring of
/// structs, so decoding allocates nothing once the buffers have grown to the connection's needs.
/// </summary>
internal sealed class HpackDecoder
{
    /// <summary>The entry overhead RFC 7541 §4.1 adds to name and value length.</summary>
    public const int EntryOverhead = 32;

    private const int InitialScratchSize = 256;

    private readonly int _maxHeaderListSize;

    // The limit we advertise in SETTINGS_HEADER_TABLE_SIZE, and the size the peer last chose (<= it) with a size update.
    private int _maxDynamicTableSize;
    private int _capacity;
    private bool _sizeUpdateRequired;

    // Dynamic table: entries in a ring (oldest at _oldest), their bytes in _bytes[_bytesStart.._bytesEnd] in the same
    // order. _size is the RFC size (bytes + 32 per entry).
    private Entry[] _entries;
    private int _oldest;
    private int _count;
    private int _size;
    private byte[] _bytes;
    private int _bytesStart;
    private int _bytesEnd;

    // Huffman output (name, then value, of the field being decoded) and names copied off the dynamic table.
    private byte[] _scratch = new byte[InitialScratchSize];

    /// <param name="maxDynamicTableSize">
    /// The SETTINGS_HEADER_TABLE_SIZE we advertise (RFC default 4096), also the table's initial size. (Until the peer
    /// acknowledges a smaller value it may still assume 4096; advertising less is the server's business to sequence.)
    /// </param>
    /// <param name="maxHeaderListSize">
    /// The largest header list (RFC 9113 §6.5.2: name + value + 32 per field) delivered to the sink; a larger one
    /// ends in <see cref="HpackErrorKind.HeaderListTooLarge"/>.
    /// </param>
    public HpackDecoder(int maxDynamicTableSize = 4096, int maxHeaderListSize = 64 * 1024)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxDynamicTableSize);
        ArgumentOutOfRangeException.ThrowIfNegative(maxHeaderListSize);
        _maxHeaderListSize = maxHeaderListSize;
        _maxDynamicTableSize = maxDynamicTableSize;
        _capacity = maxDynamicTableSize;
        _entries = new Entry[Math.Max(1, maxDynamicTableSize / EntryOverhead)];
        _bytes = new byte[2 * maxDynamicTableSize];
    }

    /// <summary>
    /// The dynamic table size limit we advertise in SETTINGS_HEADER_TABLE_SIZE; set it when the peer acknowledges a new
    /// value. Lowering it below the table's current size evicts at once, and (RFC 7541 §4.2) the next header block must
    /// then start with a dynamic table size update.
    /// </summary>
    public int MaxDynamicTableSize
    {
        get => _maxDynamicTableSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            if (value > _bytes.Length / 2)
            {
                Grow(value);
            }
            _maxDynamicTableSize = value;
            if (value < _capacity)
            {
                SetCapacity(value);
                _sizeUpdateRequired = true;
            }
        }
    }

    /// <summary>The dynamic table's current maximum size (the peer's last size update, or the initial limit).</summary>
    public int DynamicTableCapacity => _capacity;

    /// <summary>The dynamic table's size (RFC 7541 §4.1: name + value + 32 per entry).</summary>
    public int DynamicTableSize => _size;

    /// <summary>The number of entries in the dynamic table.</summary>
    public int DynamicTableCount => _count;

    /// <summary>
    /// Decodes one complete header block (HEADERS plus any CONTINUATION fragments, concatenated), calling
    /// <paramref name="sink"/> once per field in order.
    /// </summary>
    /// <exception cref="HpackException">
    /// <see cref="HpackErrorKind.CompressionError"/>: the block is malformed (the connection must close).
    /// <see cref="HpackErrorKind.HeaderListTooLarge"/>: thrown after the whole block was processed, the dynamic table
    /// updated and the sink called for the fields up to (not including) the one that crossed the limit.
    /// </exception>
    public void Decode<TSink>(ReadOnlySpan<byte> headerBlock, ref TSink sink)
        where TSink : IHpackSink, allows ref struct
    {
        var pos = 0;
        long listSize = 0;
        var tooLarge = false;
        var fieldSeen = false;
        while (pos < headerBlock.Length)
        {
            var first = headerBlock[pos];
            if ((first & 0xE0) == 0x20)
            {
                // Dynamic table size update (001xxxxx): only before the first field (RFC 7541 §4.2).
                if (fieldSeen)
                {
                    ThrowCompression("HPACK: dynamic table size update after a header field.");
                }
                var size = ReadInteger(headerBlock, ref pos, 5);
                if (size > _maxDynamicTableSize)
                {
                    ThrowCompression("HPACK: dynamic table size update above SETTINGS_HEADER_TABLE_SIZE.");
                }
                SetCapacity(size);
                _sizeUpdateRequired = false;
                continue;
            }

            if (!fieldSeen)
            {
                if (_sizeUpdateRequired)
                {
                    ThrowCompression(
                        "HPACK: missing dynamic table size update after SETTINGS_HEADER_TABLE_SIZE was lowered.");
                }
                fieldSeen = true;
            }

            int staticIndex;
            ReadOnlySpan<byte> name;
            ReadOnlySpan<byte> value;
            if ((first & 0x80) != 0)
            {
                // Indexed header field (1xxxxxxx).
                var index = ReadInteger(headerBlock, ref pos, 7);
                GetField(index, out staticIndex, out name, out value);
            }
            else
            {
                // Literal: with incremental indexing (01xxxxxx), without indexing (0000xxxx), never indexed (0001xxxx).
                var indexing = (first & 0x40) != 0;
                var nameIndex = ReadInteger(headerBlock, ref pos, indexing ? 6 : 4);
                var scratchUsed = 0;
                var oversized = false;
                if (nameIndex == 0)
                {
                    staticIndex = 0;
                    name = ReadString(headerBlock, ref pos, ref scratchUsed, ref oversized);
                }
                else
                {
                    GetField(nameIndex, out staticIndex, out name, out _);
                    if (indexing && nameIndex > HpackStaticTable.Count)
                    {
                        // The entry holding the name may be evicted (and its bytes moved) by the insertion below
                        // (RFC 7541 §4.4), so work on a copy.
                        EnsureScratch(name.Length);
                        name.CopyTo(_scratch);
                        name = _scratch.AsSpan(0, name.Length);
                        scratchUsed = name.Length;
                    }
                }
                value = ReadString(headerBlock, ref pos, ref scratchUsed, ref oversized);

                if (oversized)
                {
                    // A Huffman string longer than the scratch buffer may grow: the field is over both the header list
                    // limit and the table size, so the sink won't see it, and adding it empties the table (§4.4).
                    if (indexing)
                    {
                        Clear();
                    }
                    tooLarge = true;
                    continue;
                }
                if (indexing)
                {
                    Insert(name, value, staticIndex);
                }
            }

            listSize += name.Length + value.Length + EntryOverhead;
            if (listSize > _maxHeaderListSize)
            {
                tooLarge = true;
            }
            if (!tooLarge)
            {
                sink.OnHeader(staticIndex, name, value);
            }
        }

        if (tooLarge)
        {
            throw new HpackException(
                HpackErrorKind.HeaderListTooLarge, $"HPACK: header list larger than {_maxHeaderListSize} bytes.");
        }
    }

    /// <summary>
    /// Reads an integer with an N-bit prefix (RFC 7541 §5.1) starting at <paramref name="pos"/>, which must be inside
    /// <paramref name="source"/>. At most five continuation bytes (35 bits) are read, and the value must fit an int.
    /// </summary>
    internal static int ReadInteger(ReadOnlySpan<byte> source, ref int pos, int prefixBits)
    {
        var mask = (1 << prefixBits) - 1;
        var value = source[pos++] & mask;
        if (value < mask)
        {
            return value;
        }
        var result = (ulong)value;
        for (var shift = 0; shift <= 28; shift += 7)
        {
            if (pos >= source.Length)
            {
                ThrowCompression("HPACK: truncated integer.");
            }
            var b = source[pos++];
            result += (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                if (result > int.MaxValue)
                {
                    break;
                }
                return (int)result;
            }
        }
        ThrowCompression("HPACK: integer overflow.");
        return 0;
    }

    /// <summary>
    /// Reads a string literal (RFC 7541 §5.2). A raw string is returned in place (a slice of the block); a Huffman one is
    /// decoded into the scratch buffer after the <paramref name="scratchUsed"/> bytes already in use. When the decoded
    /// string would need the scratch buffer to grow past its bound, <paramref name="oversized"/> is set and the result
    /// is not usable.
    /// </summary>
    private ReadOnlySpan<byte> ReadString(
        ReadOnlySpan<byte> block, scoped ref int pos, scoped ref int scratchUsed, scoped ref bool oversized)
    {
        if (pos >= block.Length)
        {
            ThrowCompression("HPACK: truncated header field (string missing).");
        }
        var huffman = (block[pos] & 0x80) != 0;
        var length = ReadInteger(block, ref pos, 7);
        if (length > block.Length - pos)
        {
            ThrowCompression("HPACK: truncated string.");
        }
        var encoded = block.Slice(pos, length);
        pos += length;
        if (!huffman)
        {
            return encoded;
        }

        var start = scratchUsed;
        EnsureScratch(start + HpackHuffman.MaxDecodedLength(length));
        var room = _scratch.AsSpan(start);
        var decoded = HpackHuffman.Decode(encoded, room);
        if (decoded > room.Length)
        {
            oversized = true;
            return default;
        }
        scratchUsed = start + decoded;
        return room[..decoded];
    }

    /// <summary>
    /// Grows the scratch buffer towards <paramref name="needed"/> bytes, but not past the larger of the header list limit
    /// and the table size limit: a field needing more can be neither delivered nor stored.
    /// </summary>
    private void EnsureScratch(int needed)
    {
        if (needed <= _scratch.Length)
        {
            return;
        }
        var bound = Math.Max(_maxHeaderListSize, _maxDynamicTableSize);
        if (_scratch.Length >= bound)
        {
            return;
        }
        var size = (int)Math.Min(Math.Max((long)needed, 2L * _scratch.Length), bound);
        // No copy: only the current field's name can be live in the old buffer, and a span to it keeps it alive.
        _scratch = new byte[size];
    }

    /// <summary>The field at a static (1..61) or dynamic (62..) index; 0 or past the table is an error.</summary>
    private void GetField(int index, out int staticIndex, out ReadOnlySpan<byte> name, out ReadOnlySpan<byte> value)
    {
        if ((uint)(index - 1) < HpackStaticTable.Count)
        {
            staticIndex = HpackStaticTable.FirstNameIndex[index];
            name = HpackStaticTable.Names[index];
            value = HpackStaticTable.Values[index];
            return;
        }
        var dynamicIndex = index - HpackStaticTable.Count - 1; // 0 is the newest entry
        if (index <= 0 || dynamicIndex >= _count)
        {
            ThrowCompression($"HPACK: index {index} is not in the table.");
        }
        var slot = _oldest + _count - 1 - dynamicIndex;
        if (slot >= _entries.Length)
        {
            slot -= _entries.Length;
        }
        ref var entry = ref _entries[slot];
        staticIndex = entry.StaticIndex;
        name = _bytes.AsSpan(entry.Offset, entry.NameLength);
        value = _bytes.AsSpan(entry.Offset + entry.NameLength, entry.ValueLength);
    }

    /// <summary>
    /// Adds a field to the dynamic table (RFC 7541 §4.4): evicts the oldest entries until it fits; a field larger than
    /// the whole table empties it and is not added. <paramref name="name"/> must not point into the table's bytes.
    /// </summary>
    private void Insert(ReadOnlySpan<byte> name, ReadOnlySpan<byte> value, int staticIndex)
    {
        var entrySize = (long)name.Length + value.Length + EntryOverhead;
        if (entrySize > _capacity)
        {
            Clear();
            return;
        }
        while (_size + entrySize > _capacity)
        {
            EvictOldest();
        }
        var length = name.Length + value.Length;
        if (_bytes.Length - _bytesEnd < length)
        {
            // Live bytes + the new ones <= _capacity - 32 per entry < the buffer length: compaction makes room.
            Compact();
        }
        name.CopyTo(_bytes.AsSpan(_bytesEnd));
        value.CopyTo(_bytes.AsSpan(_bytesEnd + name.Length));
        var slot = _oldest + _count;
        if (slot >= _entries.Length)
        {
            slot -= _entries.Length;
        }
        _entries[slot] = new Entry(_bytesEnd, name.Length, value.Length, staticIndex);
        _bytesEnd += length;
        _count++;
        _size += (int)entrySize;
    }

    /// <summary>Sets the table's maximum size, evicting entries until it fits.</summary>
    private void SetCapacity(int capacity)
    {
        _capacity = capacity;
        while (_size > capacity)
        {
            EvictOldest();
        }
    }

    private void Clear()
    {
        while (_count > 0)
        {
            EvictOldest();
        }
    }

    private void EvictOldest()
    {
        ref var entry = ref _entries[_oldest];
        _size -= entry.NameLength + entry.ValueLength + EntryOverhead;
        _bytesStart = entry.Offset + entry.NameLength + entry.ValueLength;
        entry = default;
        _oldest = _oldest + 1 == _entries.Length ? 0 : _oldest + 1;
        _count--;
        if (_count == 0)
        {
            _oldest = 0;
            _bytesStart = 0;
            _bytesEnd = 0;
        }
    }

    /// <summary>Moves the live bytes to the start of the buffer (amortised: at most the table size per insertion).</summary>
    private void Compact()
    {
        var shift = _bytesStart;
        if (shift == 0)
        {
            return;
        }
        _bytes.AsSpan(shift, _bytesEnd - shift).CopyTo(_bytes);
        for (int i = 0, slot = _oldest; i < _count; i++)
        {
            _entries[slot].Offset -= shift;
            slot = slot + 1 == _entries.Length ? 0 : slot + 1;
        }
        _bytesStart = 0;
        _bytesEnd -= shift;
    }

    /// <summary>Reallocates the table for a larger limit, keeping the entries (in order, compacted).</summary>
    private void Grow(int maxSize)
    {
        var entries = new Entry[Math.Max(1, maxSize / EntryOverhead)];
        var bytes = new byte[2 * maxSize];
        var end = 0;
        for (int i = 0, slot = _oldest; i < _count; i++)
        {
            var entry = _entries[slot];
            var length = entry.NameLength + entry.ValueLength;
            _bytes.AsSpan(entry.Offset, length).CopyTo(bytes.AsSpan(end));
            entry.Offset = end;
            entries[i] = entry;
            end += length;
            slot = slot + 1 == _entries.Length ? 0 : slot + 1;
        }
        _entries = entries;
        _bytes = bytes;
        _oldest = 0;
        _bytesStart = 0;
        _bytesEnd = end;
    }

    [DoesNotReturn]
    private static void ThrowCompression(string message) =>
        throw new HpackException(HpackErrorKind.CompressionError, message);

    /// <summary>
    /// A dynamic-table entry: its name and value are <c>_bytes[Offset..]</c>; <see cref="StaticIndex"/> is the static
    /// name index the entry's name was taken from, or 0, so a field indexed later still reports it.
    /// </summary>
    private struct Entry(int offset, int nameLength, int valueLength, int staticIndex)
    {
        public int Offset = offset;
        public readonly int NameLength = nameLength;
        public readonly int ValueLength = valueLength;
        public readonly int StaticIndex = staticIndex;
    }
}

/// <summary>
/// Writes HPACK header fields for responses. It never adds to the peer's dynamic table and never Huffman-encodes:
/// literals cost a few bytes more on the wire, but nothing in CPU, and there is no encoder state to keep in step with
/// the peer. Each method writes at the start of the destination and returns the bytes written; the destination must
/// hold <see cref="GetMaxLength"/> bytes for the field (an <see cref="ArgumentException"/> otherwise).
/// </summary>
internal static class HpackEncoder
{
    /// <summary>The :status static entries (RFC 7541 Appendix A, 8..14).</summary>
    private const int Status200 = 8;

    /// <summary>
    /// An upper bound for the bytes one field takes: <paramref name="nameLength"/> is the literal name's length (0 for an
    /// indexed name, which takes at most 2 bytes).
    /// </summary>
    public static int GetMaxLength(int nameLength, int valueLength) =>
        1 + IntegerLength(nameLength, 7) + nameLength + IntegerLength(valueLength, 7) + valueLength;

    /// <summary>An indexed header field (RFC 7541 §6.1), e.g. index 8 for <c>:status: 200</c>.</summary>
    public static int WriteIndexed(Span<byte> destination, int index)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(index, 1);
        return WriteInteger(destination, index, 7, 0x80);
    }

    /// <summary>
    /// The <c>:status</c> pseudo-header: the static entry for 200, 204, 206, 304, 400, 404 and 500, otherwise a literal
    /// without indexing with the <c>:status</c> name (index 8) and the three digits.
    /// </summary>
    public static int WriteStatus(Span<byte> destination, int status)
    {
        var index = status switch
        {
            200 => Status200,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if (index != 0)
        {
            return WriteIndexed(destination, index);
        }
        ArgumentOutOfRangeException.ThrowIfLessThan(status, 100);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(status, 999);
        Span<byte> digits = [(byte)('0' + status / 100), (byte)('0' + status / 10 % 10), (byte)('0' + status % 10)];
        return WriteLiteralWithoutIndexing(destination, Status200, digits);
    }

    /// <summary>
    /// A literal without indexing (RFC 7541 §6.2.2) with static name index <paramref name="nameIndex"/> (1..61).
    /// </summary>
    public static int WriteLiteralWithoutIndexing(Span<byte> destination, int nameIndex, ReadOnlySpan<byte> value)
    {
        CheckNameIndex(nameIndex);
        CheckRoom(destination, 0, value.Length);
        var written = WriteInteger(destination, nameIndex, 4, 0x00);
        written += WriteInteger(destination[written..], value.Length, 7, 0x00);
        value.CopyTo(destination[written..]);
        return written + value.Length;
    }

    /// <summary>
    /// A literal without indexing with an indexed name and a string value written as Latin-1 (a char above U+00FF
    /// becomes '?', as the HTTP/1.1 writer's <c>Encoding.Latin1</c> does).
    /// </summary>
    public static int WriteLiteralWithoutIndexing(Span<byte> destination, int nameIndex, string value)
    {
        CheckNameIndex(nameIndex);
        CheckRoom(destination, 0, value.Length);
        var written = WriteInteger(destination, nameIndex, 4, 0x00);
        written += WriteInteger(destination[written..], value.Length, 7, 0x00);
        return written + WriteLatin1(destination[written..], value, lowercase: false);
    }

    /// <summary>A literal without indexing with a literal name, which must already be lowercase (RFC 9113 §8.2.1).</summary>
    public static int WriteLiteralWithoutIndexing(
        Span<byte> destination, ReadOnlySpan<byte> lowercaseName, ReadOnlySpan<byte> value)
    {
        CheckRoom(destination, lowercaseName.Length, value.Length);
        destination[0] = 0x00;
        var written = 1 + WriteInteger(destination[1..], lowercaseName.Length, 7, 0x00);
        lowercaseName.CopyTo(destination[written..]);
        written += lowercaseName.Length;
        written += WriteInteger(destination[written..], value.Length, 7, 0x00);
        value.CopyTo(destination[written..]);
        return written + value.Length;
    }

    /// <summary>
    /// A literal without indexing from strings: the name is lowercased (ASCII letters) on the way, both are written as
    /// Latin-1 (a char above U+00FF becomes '?'), with no intermediate byte array.
    /// </summary>
    public static int WriteLiteralWithoutIndexing(Span<byte> destination, string name, string value)
    {
        CheckRoom(destination, name.Length, value.Length);
        destination[0] = 0x00;
        var written = 1 + WriteInteger(destination[1..], name.Length, 7, 0x00);
        written += WriteLatin1(destination[written..], name, lowercase: true);
        written += WriteInteger(destination[written..], value.Length, 7, 0x00);
        return written + WriteLatin1(destination[written..], value, lowercase: false);
    }

    /// <summary>
    /// A dynamic table size update (RFC 7541 §6.3). This encoder never adds entries, but when the peer lowers its
    /// SETTINGS_HEADER_TABLE_SIZE, its decoder may insist (§4.2) that our next header block starts with one.
    /// </summary>
    public static int WriteDynamicTableSizeUpdate(Span<byte> destination, int size)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        return WriteInteger(destination, size, 5, 0x20);
    }

    /// <summary>
    /// The static-table index (1..61) of a lowercase name (exact bytes), or 0: a length bucket, then compares.
    /// </summary>
    public static int StaticNameIndex(ReadOnlySpan<byte> lowercaseName) => HpackStaticTable.NameIndex(lowercaseName);

    /// <summary>The static-table index (1..61) of a name in any ASCII case (e.g. "Content-Type" is 31), or 0.</summary>
    public static int StaticNameIndex(string name) => HpackStaticTable.NameIndex(name.AsSpan());

    /// <summary>
    /// Writes an integer with an N-bit prefix (RFC 7541 §5.1); <paramref name="flags"/> are the bits above.
    /// </summary>
    internal static int WriteInteger(Span<byte> destination, int value, int prefixBits, byte flags)
    {
        var max = (1 << prefixBits) - 1;
        if (value < max)
        {
            destination[0] = (byte)(flags | value);
            return 1;
        }
        destination[0] = (byte)(flags | max);
        var rest = (uint)(value - max);
        var written = 1;
        while (rest >= 0x80)
        {
            destination[written++] = (byte)(rest | 0x80);
            rest >>= 7;
        }
        destination[written++] = (byte)rest;
        return written;
    }

    private static int IntegerLength(int value, int prefixBits)
    {
        var max = (1 << prefixBits) - 1;
        if (value < max)
        {
            return 1;
        }
        var rest = (uint)(value - max);
        var length = 2;
        while (rest >= 0x80)
        {
            rest >>= 7;
            length++;
        }
        return length;
    }

    private static int WriteLatin1(Span<byte> destination, string text, bool lowercase)
    {
        var target = destination[..text.Length];
        for (var i = 0; i < target.Length; i++)
        {
            var c = text[i];
            if (c > 0xFF)
            {
                c = '?';
            }
            else if (lowercase && c is >= 'A' and <= 'Z')
            {
                c = (char)(c | 0x20);
            }
            target[i] = (byte)c;
        }
        return target.Length;
    }

    private static void CheckNameIndex(int nameIndex)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nameIndex, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(nameIndex, HpackStaticTable.Count);
    }

    private static void CheckRoom(Span<byte> destination, int nameLength, int valueLength)
    {
        if (destination.Length < GetMaxLength(nameLength, valueLength))
        {
            ThrowTooSmall();
        }
    }

    [DoesNotReturn]
    private static void ThrowTooSmall() =>
        throw new ArgumentException("The destination is shorter than GetMaxLength for the field.", "destination");
}
