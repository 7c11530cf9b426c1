namespace Portico.IntegrationTests.Infrastructure;

/// <summary>
/// A self-signed RSA certificate for <c>localhost</c> and <c>127.0.0.1</c>, made by the real openssl into its own
/// temp directory (PEM cert and unencrypted PEM key), deleted on dispose.
/// </summary>
/// <remarks>
/// openssl rather than <c>CertificateRequest</c>: the gateway loads PEM files named in its YAML, so the test uses
/// the same kind of files an operator would, made the way operators make them.
/// </remarks>
public sealed class TestCertificate : IDisposable
{
    private TestCertificate(string directory)
    {
        Directory = directory;
    }

    public string Directory { get; }

    public string CertPath => Path.Combine(Directory, "cert.pem");

    public string KeyPath => Path.Combine(Directory, "key.pem");

    public static async Task<TestCertificate> CreateAsync()
    {
        var directory = Path.Combine(Path.GetTempPath(), $"portico-cert-{Guid.NewGuid():N}");
        System.IO.Directory.CreateDirectory(directory);
        var certificate = new TestCertificate(directory);
        var result = await ExternalTool.RunAsync("openssl",
        [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
            "-keyout", certificate.KeyPath, "-out", certificate.CertPath,
        ], TimeSpan.FromSeconds(30));
        if (result.ExitCode != 0 || !File.Exists(certificate.CertPath) || !File.Exists(certificate.KeyPath))
        {
            certificate.Dispose();
            throw new InvalidOperationException($"openssl req failed:\n{result}");
        }
        return certificate;
    }

    public void Dispose()
    {
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
