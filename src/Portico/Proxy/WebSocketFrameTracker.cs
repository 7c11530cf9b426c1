using System.Buffers.Binary;

namespace Portico.Proxy;

/// <summary>
/// Follows the frame boundaries of one direction of a WebSocket connection (RFC 6455 §5.2) as its bytes are relayed,
/// so the gateway knows where a frame of its own (a close frame at shutdown) may go without cutting a frame in two.
/// </summary>
/// <remarks>
/// Only the header is parsed: the FIN/opcode byte, the mask bit with the 7-bit length, the 16- or 64-bit extended
/// length, and the 4-byte mask key of client frames; the payload is skipped by counting, never unmasked or copied.
/// Bytes may arrive in chunks of any size, a header split across reads included. Nothing is validated: the proxy is
/// not an endpoint, and a protocol error is the endpoints' to report. A 64-bit length with its top bit set (forbidden
/// by §5.2) is counted as given, so such a stream simply never reaches its next boundary. A mutable struct, held in a
/// field and advanced in place: no allocation per chunk.
/// </remarks>
internal struct WebSocketFrameTracker
{
    /// <summary>The close opcode (RFC 6455 §5.5.1).</summary>
    public const byte CloseOpcode = 0x8;

    private ulong _payloadRemaining;
    private ulong _length;
    private int _headerRead;
    private int _headerSize;
    private int _lengthEnd;
    private byte _opcode;

    /// <summary>True between frames: no header byte or payload byte of a frame is pending.</summary>
    public readonly bool IsAtFrameBoundary => _headerRead == 0 && _payloadRemaining == 0;

    /// <summary>True once the header of a close frame has passed (its payload may still be pending).</summary>
    public bool CloseSeen { readonly get; private set; }

    /// <summary>Frames whose last byte has passed.</summary>
    public long FramesCompleted { readonly get; private set; }

    /// <summary>
    /// Follows <paramref name="data"/>, the next bytes of the stream, and returns how many of them it consumed: all of
    /// them, or with <paramref name="stopAtBoundary"/>, only those up to the end of the current frame (0 when the
    /// stream is already at a boundary), so the caller can relay exactly that much and put its own frame next.
    /// </summary>
    public int Advance(ReadOnlySpan<byte> data, bool stopAtBoundary)
    {
        if (stopAtBoundary && IsAtFrameBoundary)
        {
            return 0;
        }
        var i = 0;
        while (i < data.Length)
        {
            if (_payloadRemaining > 0)
            {
                var available = (ulong)(data.Length - i);
                if (_payloadRemaining > available)
                {
                    _payloadRemaining -= available;
                    return data.Length;
                }
                i += (int)_payloadRemaining;
                _payloadRemaining = 0;
                FramesCompleted++;
                if (stopAtBoundary)
                {
                    return i;
                }
                continue;
            }

            var b = data[i++];
            if (_headerRead == 0)
            {
                _opcode = (byte)(b & 0x0F);
            }
            else if (_headerRead == 1)
            {
                var length7 = b & 0x7F;
                var extended = length7 == 126 ? 2 : length7 == 127 ? 8 : 0;
                _lengthEnd = 2 + extended;
                _headerSize = _lengthEnd + ((b & 0x80) != 0 ? 4 : 0);
                _length = extended == 0 ? (ulong)length7 : 0;
            }
            else if (_headerRead < _lengthEnd)
            {
                _length = (_length << 8) | b;
            }
            // Else a mask key byte: relayed as it is.
            _headerRead++;
            if (_headerRead != _headerSize)
            {
                continue;
            }

            _headerRead = 0;
            _headerSize = 0;
            if (_opcode == CloseOpcode)
            {
                CloseSeen = true;
            }
            _payloadRemaining = _length;
            if (_length == 0)
            {
                FramesCompleted++;
                if (stopAtBoundary)
                {
                    return i;
                }
            }
        }
        return i;
    }
}

/// <summary>The close frame the gateway sends at shutdown: status 1001 "going away" (RFC 6455 §7.4.1).</summary>
internal static class WebSocketCloseFrame
{
    /// <summary>1001: "an endpoint is going away, such as a server going down" (RFC 6455 §7.4.1).</summary>
    public const ushort GoingAway = 1001;

    /// <summary>The longest frame <see cref="Write"/> produces: a masked one.</summary>
    public const int MaxLength = 2 + 4 + 2 + 10;

    private static ReadOnlySpan<byte> Reason => "going away"u8;

    /// <summary>
    /// Writes a final close frame with status 1001 and the reason "going away" to <paramref name="destination"/> and
    /// returns its length. Unmasked for a client (server-to-client); masked with <paramref name="maskKey"/> (4 bytes)
    /// for a server, since every client-to-server frame must be masked (RFC 6455 §5.3).
    /// </summary>
    public static int Write(Span<byte> destination, ReadOnlySpan<byte> maskKey, bool masked)
    {
        var payloadLength = 2 + Reason.Length;
        destination[0] = 0x80 | WebSocketFrameTracker.CloseOpcode;
        destination[1] = (byte)((masked ? 0x80 : 0) | payloadLength);
        var offset = 2;
        if (masked)
        {
            maskKey[..4].CopyTo(destination[2..]);
            offset = 6;
        }
        var payload = destination.Slice(offset, payloadLength);
        BinaryPrimitives.WriteUInt16BigEndian(payload, GoingAway);
        Reason.CopyTo(payload[2..]);
        if (masked)
        {
            for (var i = 0; i < payload.Length; i++)
            {
                payload[i] ^= maskKey[i & 3];
            }
        }
        return offset + payloadLength;
    }
}
