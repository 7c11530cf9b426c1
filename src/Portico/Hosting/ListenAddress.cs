using System.Globalization;
using System.Net;

namespace Portico.Hosting;

/// <summary>Parses listener addresses as written in config: "0.0.0.0:8080", "[::]:8080", "localhost:80", "*:80".</summary>
public static class ListenAddress
{
    public static bool TryParse(string hostPort, out IPEndPoint endpoint)
    {
        endpoint = null!;
        var colon = hostPort.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(hostPort.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            return false;
        }
        if (!TryParseHost(hostPort[..colon], out var address))
        {
            return false;
        }
        endpoint = new IPEndPoint(address, port);
        return true;
    }

    public static bool TryParseHost(string host, out IPAddress address)
    {
        host = host.Trim();
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        switch (host)
        {
            case "*" or "":
                address = IPAddress.Any;
                return true;
            case "localhost":
                address = IPAddress.Loopback;
                return true;
        }
        return IPAddress.TryParse(host, out address!);
    }
}
