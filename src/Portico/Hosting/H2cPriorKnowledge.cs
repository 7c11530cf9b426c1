using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using System.Security.Cryptography.X509Certificates;

namespace Portico.Hosting;

/// <summary>
/// Serves HTTP/1.1 and cleartext HTTP/2 with prior knowledge (RFC 9113 §3.3) on one port, as Envoy does, so gRPC
/// clients without TLS work against the same listener as browsers and curl.
/// </summary>
/// <remarks>
/// Kestrel (through .NET 10) always picks HTTP/1.1 on a cleartext endpoint that allows both, because there is
/// no ALPN to ask (dotnet/aspnetcore#56984). Its protocol choice does honour an ALPN result found in the
/// connection features, so this connection middleware peeks at the first bytes without consuming them and, when
/// they are the 24-byte HTTP/2 preface, publishes "h2" as if ALPN had chosen it. Kestrel's choice keys on the
/// presence of a TLS connection feature, so one is published too; it carries no certificate, and
/// <see cref="IsCleartextH2"/> lets the request path restore the scheme to "http". It may seem simpler to open a
/// second port for h2c, but clients that speak prior knowledge expect the same port, and Envoy users do.
/// </remarks>
internal static class H2cPriorKnowledge
{
    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    /// <summary>Adds the sniffing middleware to a cleartext listener that allows HTTP/1.1 and HTTP/2.</summary>
    public static Func<ConnectionDelegate, ConnectionDelegate> Middleware => static next => async connection =>
    {
        await DetectAsync(connection);
        await next(connection);
    };

    /// <summary>Peeks at the connection's next bytes; when they are the HTTP/2 preface, publishes "h2" for Kestrel.</summary>
    public static async ValueTask DetectAsync(ConnectionContext connection)
    {
        if (await StartsWithPrefaceAsync(connection.Transport.Input, connection.ConnectionClosed))
        {
            var feature = new CleartextH2Feature();
            connection.Features.Set<ITlsApplicationProtocolFeature>(feature);
            connection.Features.Set<ITlsConnectionFeature>(feature);
        }
    }

    /// <summary>True when the connection's next bytes are the HTTP/2 preface (nothing is consumed).</summary>
    public static async ValueTask<bool> StartsWithPrefaceAsync(ConnectionContext connection) =>
        await StartsWithPrefaceAsync(connection.Transport.Input, connection.ConnectionClosed);

    /// <summary>True when the request arrived over cleartext HTTP/2 detected by this middleware.</summary>
    public static bool IsCleartextH2(HttpContext context) => context.Features.Get<ITlsConnectionFeature>() is CleartextH2Feature;

    private static async ValueTask<bool> StartsWithPrefaceAsync(PipeReader input, CancellationToken cancellationToken)
    {
        while (true)
        {
            ReadResult result;
            try
            {
                result = await input.ReadAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
            var buffer = result.Buffer;
            var decision = Check(buffer);
            if (decision is not null || result.IsCompleted || result.IsCanceled)
            {
                // Consume nothing and leave nothing examined: the HTTP parser reads the same bytes next.
                input.AdvanceTo(buffer.Start);
                return decision == true;
            }
            // A partial preface so far: wait for more bytes.
            input.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static bool? Check(ReadOnlySequence<byte> buffer)
    {
        var preface = Preface;
        var length = (int)Math.Min(buffer.Length, preface.Length);
        Span<byte> head = stackalloc byte[24];
        buffer.Slice(0, length).CopyTo(head);
        if (!head[..length].SequenceEqual(preface[..length]))
        {
            return false;
        }
        return length == preface.Length ? true : null;
    }

    private sealed class CleartextH2Feature : ITlsApplicationProtocolFeature, ITlsConnectionFeature
    {
        private static readonly byte[] H2 = "h2"u8.ToArray();

        public ReadOnlyMemory<byte> ApplicationProtocol => H2;

        public X509Certificate2? ClientCertificate { get; set; }

        public Task<X509Certificate2?> GetClientCertificateAsync(CancellationToken cancellationToken) => Task.FromResult<X509Certificate2?>(null);
    }
}
