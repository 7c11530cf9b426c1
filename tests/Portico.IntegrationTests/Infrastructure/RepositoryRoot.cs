namespace Portico.IntegrationTests.Infrastructure;

/// <summary>The repository checkout the tests run from: the folder holding Portico.slnx, found by walking up.</summary>
public static class RepositoryRoot
{
    public static string Path { get; } = Find();

    private static string Find()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null)
        {
            if (File.Exists(System.IO.Path.Combine(directory.FullName, "Portico.slnx")))
            {
                return directory.FullName;
            }
            directory = directory.Parent;
        }
        throw new InvalidOperationException($"no Portico.slnx above {AppContext.BaseDirectory}");
    }
}
