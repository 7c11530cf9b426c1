using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Portico.Proxy;

/// <summary>Writes the small JSON body of an error response: <c>{"error","status","message","request_id"}</c>.</summary>
public static class ErrorResponse
{
    /// <summary>
    /// Answers <paramref name="error"/> when nothing has been sent yet; when the response already started, aborts
    /// the downstream stream instead (the client must not mistake a truncated body for a complete one).
    /// Returns the status sent, or 0 when nothing was sent.
    /// </summary>
    public static async ValueTask<int> WriteAsync(ProxySession session, ProxyError error)
    {
        var status = error.StatusCode;
        var response = session.Response;
        if (status == 0 || session.HttpContext.RequestAborted.IsCancellationRequested)
        {
            return 0;
        }
        if (response.HasStarted)
        {
            session.HttpContext.Abort();
            return 0;
        }
        session.ResponseBodyBytes = await WriteAsync(session.HttpContext, status, error.Code, error.Message, session.RequestId);
        return status;
    }

    /// <summary>Writes a JSON error with the given fields, replacing any headers set so far except X-Request-ID.</summary>
    /// <returns>The body length in bytes (0 for HEAD).</returns>
    public static async Task<int> WriteAsync(HttpContext context, int status, string code, string message, string requestId,
        KeyValuePair<string, string>? extraHeader = null)
    {
        var response = context.Response;
        response.Clear();
        response.StatusCode = status;
        if (extraHeader is { } header)
        {
            response.Headers[header.Key] = header.Value;
        }
        response.Headers["X-Request-ID"] = requestId;
        response.Headers.CacheControl = "no-store";
        response.ContentType = "application/json";
        var body = Format(status, code, message, requestId);
        response.ContentLength = body.Length;
        if (HttpMethods.IsHead(context.Request.Method))
        {
            return 0;
        }
        await response.Body.WriteAsync(body, context.RequestAborted);
        return body.Length;
    }

    internal static byte[] Format(int status, string code, string message, string requestId)
    {
        using var stream = new MemoryStream(160);
        using (var writer = new Utf8JsonWriter(stream))
        {
            writer.WriteStartObject();
            writer.WriteString("error"u8, code);
            writer.WriteNumber("status"u8, status);
            writer.WriteString("message"u8, message);
            writer.WriteString("request_id"u8, requestId);
            writer.WriteEndObject();
        }
        stream.WriteByte((byte)'\n');
        return stream.ToArray();
    }
}
