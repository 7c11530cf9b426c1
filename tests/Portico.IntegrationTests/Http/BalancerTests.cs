using Portico.IntegrationTests.Infrastructure;

namespace Portico.IntegrationTests.Http;

/// <summary>
/// Load balancing end to end: three real upstream servers shared by three upstream groups with different
/// strategies; each group has its own route prefix, so counts per prefix tell the groups apart.
/// </summary>
public sealed class BalancerTests : IClassFixture<BalancerTests.Fixture>
{
    private readonly Fixture _fixture;

    public BalancerTests(Fixture fixture)
    {
        _fixture = fixture;
    }

    public sealed class Fixture : IAsyncLifetime
    {
        public GatewayProcess Gateway { get; private set; } = null!;

        public RecordingUpstream[] Servers { get; private set; } = [];

        public int Port { get; private set; }

        public string Url(string path) => $"http://127.0.0.1:{Port}{path}";

        public async Task InitializeAsync()
        {
            Servers = [await RecordingUpstream.StartAsync("s1"), await RecordingUpstream.StartAsync("s2"), await RecordingUpstream.StartAsync("s3")];
            Port = Ports.GetFree();
            var yaml = $"""
                server:
                  bind_address: "127.0.0.1:{Port}"
                  graceful_timeout_seconds: 1
                admin:
                  enabled: false
                upstreams:
                  - name: rr
                    load_balance_strategy: round_robin
                    servers:
                      - {ServerYaml(0, 1)}
                      - {ServerYaml(1, 1)}
                      - {ServerYaml(2, 1)}
                  - name: wrr
                    load_balance_strategy: weighted_round_robin
                    servers:
                      - {ServerYaml(0, 3)}
                      - {ServerYaml(1, 1)}
                  - name: hash
                    load_balance_strategy: ip_hash
                    servers:
                      - {ServerYaml(0, 1)}
                      - {ServerYaml(1, 1)}
                      - {ServerYaml(2, 1)}
                routes:
                  - path: "/rr/*"
                    upstream: rr
                  - path: "/wrr/*"
                    upstream: wrr
                  - path: "/hash/*"
                    upstream: hash
                """;
            Gateway = await GatewayProcess.StartAsync(yaml, Port);
        }

        private string ServerYaml(int index, int weight) => $"{{host: \"127.0.0.1\", port: {Servers[index].Port}, weight: {weight}}}";

        public async Task DisposeAsync()
        {
            await Gateway.DisposeAsync();
            foreach (var server in Servers)
            {
                await server.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task RoundRobin_30Requests_Split10_10_10()
    {
        var counts = await SendAsync("/rr/", 30);

        Assert.Equal([10, 10, 10], counts);
    }

    [Fact]
    public async Task WeightedRoundRobin_Weights3To1_40RequestsSplit30_10()
    {
        var counts = await SendAsync("/wrr/", 40);

        Assert.Equal([30, 10, 0], counts);
    }

    [Fact]
    public async Task IpHash_20RequestsFromOneClient_AllOnOneServer()
    {
        var counts = await SendAsync("/hash/", 20);

        Assert.Equal(1, counts.Count(c => c == 20));
        Assert.Equal(2, counts.Count(c => c == 0));
    }

    /// <summary>Sends <paramref name="count"/> sequential GETs under <paramref name="prefix"/>; returns how many each server got.</summary>
    private async Task<int[]> SendAsync(string prefix, int count)
    {
        var before = _fixture.Servers.Select(s => s.CountWithPrefix(prefix)).ToArray();
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        for (var i = 0; i < count; i++)
        {
            using var response = await client.GetAsync(_fixture.Url($"{prefix}{i}"));
            Assert.True(response.IsSuccessStatusCode, $"request {i}: {(int)response.StatusCode}\n{_fixture.Gateway.Output}");
        }
        return _fixture.Servers.Select((s, i) => s.CountWithPrefix(prefix) - before[i]).ToArray();
    }
}
