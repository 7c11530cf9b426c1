using Portico.Config;
using Portico.Upstreams;

namespace Portico.Tests.Upstreams;

internal static class TestServers
{
    /// <summary>Servers 10.0.0.1:80, 10.0.0.2:80, ... with the given weights, indexed in order.</summary>
    public static ServerModel[] Create(params int[] weights)
    {
        var servers = new ServerModel[weights.Length];
        for (var i = 0; i < weights.Length; i++)
        {
            servers[i] = Server($"10.0.0.{i + 1}", weights[i], i);
        }

        return servers;
    }

    public static ServerModel Server(string host, int weight, int index) =>
        new(new UpstreamServerConfig { Host = host, Port = 80, Weight = weight }, index);

    public static ServerModel[] Equal(int count)
    {
        var weights = new int[count];
        Array.Fill(weights, 1);
        return Create(weights);
    }

    public static void Load(ServerModel server, int inFlight)
    {
        for (var i = 0; i < inFlight; i++)
        {
            server.State.OnRequestStart();
        }
    }
}
