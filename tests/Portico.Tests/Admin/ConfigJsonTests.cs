using System.Text;
using System.Text.Json;
using Portico.Admin;
using Portico.Config;

namespace Portico.Tests.Admin;

public sealed class ConfigJsonTests
{
    private static JsonElement Render(string yaml)
    {
        var result = ConfigLoader.LoadYaml(yaml);
        Assert.True(result.IsValid, result.ToString());
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream))
        {
            ConfigJson.Write(writer, result.Config!);
        }
        return JsonDocument.Parse(Encoding.UTF8.GetString(stream.ToArray())).RootElement.Clone();
    }

    [Fact]
    public void Write_DefaultConfigFile_HidesTheJwtSecret_KeepsRoutesAndUpstreams()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(directory!.FullName, "Portico.slnx")))
        {
            directory = directory.Parent;
        }
        var json = Render(File.ReadAllText(Path.Combine(directory.FullName, "config", "default.yaml")));

        Assert.Equal(ConfigJson.Redacted, json.GetProperty("auth").GetProperty("jwt_secret").GetString());
        Assert.DoesNotContain("development-secret", json.ToString(), StringComparison.Ordinal);
        Assert.Equal("/api/auth/validate", json.GetProperty("auth").GetProperty("token_validation_endpoint").GetString());
        Assert.True(json.GetProperty("upstreams").GetArrayLength() > 0);
        Assert.True(json.GetProperty("routes").GetArrayLength() > 0);
    }

    [Fact]
    public void Write_SecretKeys_AreRedacted_NullStaysNull_OtherValuesStay()
    {
        var json = Render("""
            admin:
              token: "t0ken-value"
            auth:
              jwt_secret: "a-jwt-secret-of-at-least-thirty-two-bytes!"
            security:
              rate_limit:
                key_extraction: header
                header: X-Client
              headers:
                custom_headers:
                  X-Internal-Token: "tok-123"
                  X-Secret-Thing: "sec-456"
                  Cache-Control: "no-store"
            tls:
              cert_path: /etc/portico/cert.pem
              key_path: /etc/portico/key.pem
            upstreams:
              backend:
                servers: ["127.0.0.1:3000"]
            """);
        Assert.Equal("***", json.GetProperty("admin").GetProperty("token").GetString());
        Assert.Equal("***", json.GetProperty("auth").GetProperty("jwt_secret").GetString());
        var headers = json.GetProperty("security").GetProperty("headers").GetProperty("custom_headers");
        Assert.Equal("***", headers.GetProperty("X-Internal-Token").GetString());
        Assert.Equal("***", headers.GetProperty("X-Secret-Thing").GetString());
        Assert.Equal("no-store", headers.GetProperty("Cache-Control").GetString());
        // Named like secrets, but a mode and a file path.
        Assert.Equal("header", json.GetProperty("security").GetProperty("rate_limit").GetProperty("key_extraction").GetString());
        Assert.Equal("/etc/portico/key.pem", json.GetProperty("tls").GetProperty("key_path").GetString());
        // Unset stays visible as unset; numbers under secret-looking names are not secrets.
        Assert.Equal(JsonValueKind.Null, json.GetProperty("auth").GetProperty("jwks_url").ValueKind);
        Assert.Equal(3600, json.GetProperty("auth").GetProperty("token_expiry_seconds").GetInt32());
        Assert.Equal(3000, json.GetProperty("upstreams")[0].GetProperty("servers")[0].GetProperty("port").GetInt32());
        Assert.Equal("round_robin", json.GetProperty("upstreams")[0].GetProperty("load_balance_strategy").GetString());
    }

    [Theory]
    [InlineData("redis://:pw@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0")]
    [InlineData("redis://user:pw@host", "redis://***@host")]
    [InlineData("rediss://host:6380?password=pw&db=2", "rediss://host:6380?password=***&db=2")]
    [InlineData("http://collector:4317/v1?api_key=k&x=1", "http://collector:4317/v1?api_key=***&x=1")]
    [InlineData("http://collector:4317", "http://collector:4317")]
    [InlineData("/var/lib/portico/cache", "/var/lib/portico/cache")]
    [InlineData("user@example.com", "user@example.com")]
    public void RedactUrlCredentials_HidesUserInfoAndSecretParameters(string value, string expected)
    {
        Assert.Equal(expected, ConfigJson.RedactUrlCredentials(value));
    }

    [Theory]
    [InlineData("jwt_secret", true)]
    [InlineData("token", true)]
    [InlineData("redis_password", true)]
    [InlineData("X-Api-Key", true)]
    [InlineData("client_credentials", true)]
    [InlineData("key_path", false)]
    [InlineData("key_extraction", false)]
    [InlineData("token_validation_endpoint", false)]
    [InlineData("cert_path", false)]
    [InlineData("host", false)]
    public void IsSecretKey_ByName(string key, bool secret)
    {
        Assert.Equal(secret, ConfigJson.IsSecretKey(key));
    }
}
