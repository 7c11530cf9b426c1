using System.Net.Sockets;
using System.Text;

namespace Portico.Hosting;

/// <summary>
/// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET per state change, so a unit with
/// <c>Type=notify</c> knows when Portico is ready, reloading or stopping, and which process is the main one after an
/// upgrade (<c>MAINPID=</c>, with <c>NotifyAccess=all</c>). Does nothing when not started by systemd.
/// </summary>
public static class SystemdNotify
{
    /// <summary>Sends <paramref name="state"/> (e.g. "READY=1"); returns false when there is no notify socket or the send failed.</summary>
    public static bool Notify(string state)
    {
        var path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        if (string.IsNullOrEmpty(path) || !OperatingSystem.IsLinux())
        {
            return false;
        }
        // "@name" is an abstract socket: a leading NUL byte.
        if (path[0] == '@')
        {
            path = "\0" + path[1..];
        }
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.SendTo(Encoding.UTF8.GetBytes(state), new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
