using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Portico.IntegrationTests.Infrastructure;

/// <summary>A fact that runs only where Debian's chromium is installed (scripts/install-deps.sh installs it; CI has it).</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public ChromiumFactAttribute()
    {
        if (HeadlessChromium.ExecutablePath is null)
        {
            Skip = "chromium is not installed (/usr/bin/chromium): run 'apt-get install -y chromium' (scripts/install-deps.sh does) to test the dashboard in a real browser";
        }
    }
}

/// <summary>
/// A real headless Chromium driven over the Chrome DevTools Protocol (a WebSocket and JSON, no Selenium or Playwright):
/// one page, navigated, evaluated, clicked and photographed. Console errors, uncaught exceptions and Content-Security-
/// Policy violations are collected (HTTP error statuses are not), so a test can assert that the page ran clean.
/// </summary>
/// <remarks>
/// The browser is started with <c>--remote-debugging-port=0</c> and announces its WebSocket on stderr ("DevTools
/// listening on ws://..."), so no port is chosen in advance. Commands go to one page target through a flattened
/// session (<c>Target.attachToTarget</c> with <c>flatten</c>), all over the browser's one socket. The process (the
/// wrapper script and what it starts) is killed by its own PID on dispose.
/// </remarks>
public sealed class HeadlessChromium : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _profile;
    private readonly ClientWebSocket _socket = new();
    private readonly ConcurrentDictionary<int, TaskCompletionSource<JsonElement>> _pending = new();
    private readonly ConcurrentQueue<string> _problems = new();
    private readonly SemaphoreSlim _sendLock = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private Task? _receiver;
    private string? _session;
    private int _nextId;

    private HeadlessChromium(Process process, string profile)
    {
        _process = process;
        _profile = profile;
    }

    /// <summary>/usr/bin/chromium when present, else <c>chromium</c> on PATH, else null.</summary>
    public static string? ExecutablePath { get; } = Find();

    /// <summary>Console errors, uncaught exceptions and CSP violations seen on the page so far.</summary>
    public IReadOnlyCollection<string> Problems => _problems;

    /// <summary>Starts the browser with a page of <paramref name="width"/> × <paramref name="height"/> CSS pixels.</summary>
    public static async Task<HeadlessChromium> StartAsync(int width = 1440, int height = 900)
    {
        var path = ExecutablePath ?? throw new InvalidOperationException("chromium is not installed");
        var profile = Path.Combine(Path.GetTempPath(), $"portico-chromium-{Guid.NewGuid():N}");
        Directory.CreateDirectory(profile);
        var psi = new ProcessStartInfo(path)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[]
        {
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
            $"--user-data-dir={profile}", $"--window-size={width},{height}", "about:blank",
        })
        {
            psi.ArgumentList.Add(argument);
        }
        var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start chromium");
        var browser = new HeadlessChromium(process, profile);
        try
        {
            var endpoint = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
            var stderr = new ConcurrentQueue<string>();
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null)
                {
                    return;
                }
                stderr.Enqueue(e.Data);
                var at = e.Data.IndexOf("ws://", StringComparison.Ordinal);
                if (e.Data.StartsWith("DevTools listening on ", StringComparison.Ordinal) && at >= 0)
                {
                    endpoint.TrySetResult(e.Data[at..].Trim());
                }
            };
            process.OutputDataReceived += (_, _) => { };
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();
            var started = await Task.WhenAny(endpoint.Task, Task.Delay(TimeSpan.FromSeconds(30)));
            if (started != endpoint.Task)
            {
                throw new TimeoutException("chromium did not announce its DevTools endpoint within 30 s:\n" + string.Join('\n', stderr));
            }
            await browser.ConnectAsync(new Uri(await endpoint.Task), width, height);
            return browser;
        }
        catch
        {
            await browser.DisposeAsync();
            throw;
        }
    }

    private async Task ConnectAsync(Uri endpoint, int width, int height)
    {
        _socket.Options.KeepAliveInterval = TimeSpan.Zero;
        using (var connect = new CancellationTokenSource(TimeSpan.FromSeconds(15)))
        {
            await _socket.ConnectAsync(endpoint, connect.Token);
        }
        _receiver = Task.Run(ReceiveLoopAsync);
        var target = await SendAsync("Target.createTarget", new JsonObject { ["url"] = "about:blank" }, browserLevel: true);
        var attached = await SendAsync("Target.attachToTarget",
            new JsonObject { ["targetId"] = target.GetProperty("targetId").GetString(), ["flatten"] = true }, browserLevel: true);
        _session = attached.GetProperty("sessionId").GetString();
        await SendAsync("Page.enable");
        await SendAsync("Runtime.enable");
        await SendAsync("Log.enable");
        await SendAsync("Emulation.setDeviceMetricsOverride",
            new JsonObject { ["width"] = width, ["height"] = height, ["deviceScaleFactor"] = 1, ["mobile"] = false });
    }

    /// <summary>Sends a DevTools command to the page (or the browser) and returns its result.</summary>
    public async Task<JsonElement> SendAsync(string method, JsonObject? parameters = null, bool browserLevel = false, TimeSpan? timeout = null)
    {
        var id = Interlocked.Increment(ref _nextId);
        var message = new JsonObject { ["id"] = id, ["method"] = method, ["params"] = parameters ?? new JsonObject() };
        if (!browserLevel && _session is not null)
        {
            message["sessionId"] = _session;
        }
        var reply = new TaskCompletionSource<JsonElement>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = reply;
        var bytes = Encoding.UTF8.GetBytes(message.ToJsonString());
        await _sendLock.WaitAsync();
        try
        {
            await _socket.SendAsync(bytes, WebSocketMessageType.Text, endOfMessage: true, _stop.Token);
        }
        finally
        {
            _sendLock.Release();
        }
        var limit = timeout ?? TimeSpan.FromSeconds(30);
        if (await Task.WhenAny(reply.Task, Task.Delay(limit)) != reply.Task)
        {
            _pending.TryRemove(id, out _);
            throw new TimeoutException($"DevTools command {method} got no answer within {limit}");
        }
        return await reply.Task;
    }

    /// <summary>Opens <paramref name="url"/> and waits until the document has loaded.</summary>
    public async Task NavigateAsync(string url)
    {
        var result = await SendAsync("Page.navigate", new JsonObject { ["url"] = url });
        if (result.TryGetProperty("errorText", out var error) && error.GetString() is { Length: > 0 } text)
        {
            throw new InvalidOperationException($"navigation to {url} failed: {text}");
        }
        await WaitForAsync("document.readyState === 'complete'", TimeSpan.FromSeconds(30));
    }

    /// <summary>Evaluates a JavaScript expression in the page (promises awaited) and returns its value as JSON.</summary>
    public async Task<JsonElement> EvaluateAsync(string expression)
    {
        var result = await SendAsync("Runtime.evaluate",
            new JsonObject { ["expression"] = expression, ["returnByValue"] = true, ["awaitPromise"] = true });
        if (result.TryGetProperty("exceptionDetails", out var exception))
        {
            throw new InvalidOperationException($"'{expression}' threw: {exception}");
        }
        var value = result.GetProperty("result");
        return value.TryGetProperty("value", out var v) ? v.Clone() : default;
    }

    /// <summary>Evaluates <paramref name="expression"/> every 100 ms until it is truthy; throws with <paramref name="describe"/>'s value on timeout.</summary>
    public async Task WaitForAsync(string expression, TimeSpan timeout, string? describe = null)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var value = await EvaluateAsync($"!!({expression})");
            if (value.ValueKind == JsonValueKind.True)
            {
                return;
            }
            if (clock.Elapsed > timeout)
            {
                var state = describe is null ? "" : "\npage: " + await EvaluateAsync(describe);
                throw new TimeoutException($"'{expression}' did not become true within {timeout}{state}\nproblems: {string.Join("\n", _problems)}");
            }
            await Task.Delay(100);
        }
    }

    /// <summary>A PNG of the whole page (not only the viewport) at <paramref name="width"/> CSS pixels.</summary>
    public async Task<byte[]> ScreenshotAsync(int width)
    {
        var height = (await EvaluateAsync("Math.ceil(document.documentElement.scrollHeight)")).GetInt32();
        await SendAsync("Emulation.setDeviceMetricsOverride",
            new JsonObject { ["width"] = width, ["height"] = height, ["deviceScaleFactor"] = 1, ["mobile"] = false });
        // Let the page lay out (and redraw its charts) at the new size before the capture.
        await EvaluateAsync("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))");
        var shot = await SendAsync("Page.captureScreenshot", new JsonObject { ["format"] = "png", ["captureBeyondViewport"] = true });
        return Convert.FromBase64String(shot.GetProperty("data").GetString()!);
    }

    private async Task ReceiveLoopAsync()
    {
        var buffer = new byte[64 * 1024];
        using var message = new MemoryStream();
        try
        {
            while (!_stop.IsCancellationRequested && _socket.State == WebSocketState.Open)
            {
                var result = await _socket.ReceiveAsync(buffer, _stop.Token);
                if (result.MessageType == WebSocketMessageType.Close)
                {
                    break;
                }
                message.Write(buffer, 0, result.Count);
                if (!result.EndOfMessage)
                {
                    continue;
                }
                Dispatch(message.GetBuffer().AsSpan(0, (int)message.Length));
                message.SetLength(0);
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or WebSocketException)
        {
        }
        foreach (var (_, pending) in _pending)
        {
            pending.TrySetException(new InvalidOperationException("the DevTools connection closed"));
        }
    }

    private void Dispatch(ReadOnlySpan<byte> json)
    {
        using var document = JsonDocument.Parse(json.ToArray());
        var root = document.RootElement;
        if (root.TryGetProperty("id", out var idElement))
        {
            if (_pending.TryRemove(idElement.GetInt32(), out var pending))
            {
                if (root.TryGetProperty("error", out var error))
                {
                    pending.TrySetException(new InvalidOperationException("DevTools error: " + error));
                }
                else
                {
                    pending.TrySetResult(root.GetProperty("result").Clone());
                }
            }
            return;
        }
        if (!root.TryGetProperty("method", out var method) || !root.TryGetProperty("params", out var parameters))
        {
            return;
        }
        switch (method.GetString())
        {
            case "Runtime.exceptionThrown":
                _problems.Enqueue("exception: " + parameters.GetProperty("exceptionDetails"));
                break;
            case "Runtime.consoleAPICalled" when parameters.GetProperty("type").GetString() is "error" or "assert":
                _problems.Enqueue("console: " + parameters.GetProperty("args"));
                break;
            // Network entries are HTTP answers such as the 401 the dashboard expects before it has a token; what is
            // collected are script errors and policy violations (CSP reports come as source "security").
            case "Log.entryAdded" when parameters.GetProperty("entry").GetProperty("level").GetString() == "error"
                && parameters.GetProperty("entry").GetProperty("source").GetString() != "network":
                _problems.Enqueue("log: " + parameters.GetProperty("entry").GetProperty("text").GetString());
                break;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (_socket.State == WebSocketState.Open)
            {
                using var close = new CancellationTokenSource(TimeSpan.FromSeconds(2));
                await _socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, close.Token);
            }
        }
        catch (Exception ex) when (ex is WebSocketException or OperationCanceledException)
        {
        }
        await _stop.CancelAsync();
        if (_receiver is not null)
        {
            await Task.WhenAny(_receiver, Task.Delay(TimeSpan.FromSeconds(2)));
        }
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                await _process.WaitForExitAsync(wait.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
        _process.Dispose();
        _socket.Dispose();
        _stop.Dispose();
        _sendLock.Dispose();
        try
        {
            Directory.Delete(_profile, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static string? Find()
    {
        if (File.Exists("/usr/bin/chromium"))
        {
            return "/usr/bin/chromium";
        }
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
        {
            var candidate = Path.Combine(directory, "chromium");
            if (directory.Length > 0 && File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }
}
