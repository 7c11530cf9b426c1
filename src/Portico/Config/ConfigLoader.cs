using System.Collections.Concurrent;
using System.Globalization;
using System.Reflection;
using System.Text;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace Portico.Config;

/// <summary>
/// Loads a <see cref="GatewayConfig"/> from YAML: parses, binds the YAML onto the config records, then validates,
/// collecting every error with its YAML path, line and column instead of stopping at the first.
/// </summary>
/// <remarks>
/// <para>
/// Binding is by convention: a record property <c>FooBar</c> is the YAML key <c>foo_bar</c> (or the names in
/// <see cref="YamlKeyAttribute"/>). Keys that are absent keep the default of the property initializer. Unknown keys
/// are errors, with the nearest known key suggested, so that a typo never silently does nothing.
/// </para>
/// <para>
/// Scalar values may refer to environment variables: <c>${NAME}</c> is replaced by the variable's value (an unset
/// variable is an error) and <c>${NAME:-default}</c> by its value, or by <c>default</c> when it is unset or empty.
/// <c>$${</c> stands for a literal <c>${</c>. Expansion happens before the value is converted, so
/// <c>listen_port: ${PORT:-8080}</c> works; an unquoted value that expands to nothing is null, a quoted one the empty
/// string. Keys are never expanded.
/// </para>
/// <para>
/// Two seed shapes get special handling: <c>upstreams</c> may be a list of upstreams with a <c>name</c> (seed 000) or
/// a map from name to upstream (seed 001); an upstream server may be an object (<c>host</c>, <c>port</c>, ...) or a
/// string <c>"host:port"</c> (<c>"[::1]:8080"</c> for IPv6). YAML merge keys (<c>&lt;&lt;: *defaults</c>) are
/// honoured, explicit keys winning over merged ones.
/// </para>
/// <para>This runs at load and reload only; it uses reflection freely and is kept out of the request path.</para>
/// </remarks>
public static class ConfigLoader
{
    /// <summary>Reads and loads the YAML file at <paramref name="path"/>; a missing or unreadable file is an error.</summary>
    /// <remarks>Relative certificate paths are looked up from the working directory and from the file's directory.</remarks>
    public static ConfigLoadResult LoadFile(string path)
    {
        string yaml;
        try
        {
            yaml = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return new ConfigLoadResult
            {
                SourceName = path,
                Errors = [new ConfigError("", 0, 0, $"cannot read config file '{path}': {e.Message}")],
            };
        }

        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        return Load(yaml, path, Environment.GetEnvironmentVariable, directory);
    }

    /// <summary>Loads config from YAML text; <paramref name="sourceName"/> names it in messages.</summary>
    public static ConfigLoadResult LoadYaml(string yaml, string sourceName = "<inline>") =>
        Load(yaml, sourceName, Environment.GetEnvironmentVariable, baseDirectory: null);

    /// <summary>
    /// Validates a config built in code (no YAML): the same semantic checks as a loaded file, without line numbers.
    /// </summary>
    public static ConfigLoadResult Validate(GatewayConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        var map = new ConfigSourceMap();
        var (errors, warnings) = ConfigValidator.Validate(config, map, baseDirectory: null);
        return new ConfigLoadResult
        {
            Config = errors.Count == 0 ? config : null,
            Errors = errors,
            Warnings = warnings,
            SourceName = "<code>",
            SourceMap = map,
        };
    }

    /// <summary>The loader with its inputs injected: tests pass their own environment instead of mutating the process's.</summary>
    internal static ConfigLoadResult Load(string yaml, string sourceName, Func<string, string?> environment, string? baseDirectory)
    {
        ArgumentNullException.ThrowIfNull(yaml);
        var map = new ConfigSourceMap();
        var errors = new List<ConfigError>();

        var root = Parse(yaml, errors);
        if (root is null)
        {
            return new ConfigLoadResult { SourceName = sourceName, Errors = errors, SourceMap = map };
        }

        var binder = new Binder(environment, map, errors);
        var config = binder.BindRoot(root);
        if (config is null)
        {
            return new ConfigLoadResult { SourceName = sourceName, Errors = errors, SourceMap = map };
        }

        var (semanticErrors, warnings) = ConfigValidator.Validate(config, map, baseDirectory);

        // A value the binder could not read keeps its default (or, for a list item, is dropped); checking it again
        // would add a second, misleading error at the same place, e.g. "needs at least one server" right after
        // "server '127.0.0.1' has no port". Only the binder's error is kept for such paths.
        var bindErrorPaths = errors.Select(static e => e.Path).ToList();
        errors.AddRange(semanticErrors.Where(e => !bindErrorPaths.Any(p => Overlaps(e.Path, p))));

        return new ConfigLoadResult
        {
            Config = errors.Count == 0 ? config : null,
            Errors = InDocumentOrder(errors),
            Warnings = InDocumentOrder(warnings),
            SourceName = sourceName,
            SourceMap = map,
        };
    }

    /// <summary>Sorts by line and column (stable), problems without a location last: the order an operator reads.</summary>
    private static ConfigError[] InDocumentOrder(IEnumerable<ConfigError> problems) =>
        [.. problems.OrderBy(static e => e.Line == 0 ? int.MaxValue : e.Line).ThenBy(static e => e.Column)];

    /// <summary>
    /// True when a semantic error at <paramref name="semanticPath"/> is about a value the binder already failed on
    /// at <paramref name="bindPath"/>: the same path, a path inside it, or the list that lost an item.
    /// </summary>
    private static bool Overlaps(string semanticPath, string bindPath)
    {
        if (bindPath.Length == 0)
        {
            return true;
        }

        if (semanticPath == bindPath)
        {
            return true;
        }

        if (semanticPath.StartsWith(bindPath, StringComparison.Ordinal)
            && semanticPath[bindPath.Length] is '.' or '[')
        {
            return true;
        }

        return bindPath.StartsWith(semanticPath + "[", StringComparison.Ordinal);
    }

    /// <summary>Parses the single YAML document; a syntax error, an empty file or a non-mapping root is one error.</summary>
    private static YamlMappingNode? Parse(string yaml, List<ConfigError> errors)
    {
        var stream = new YamlStream();
        var parser = new TrackingParser(new Parser(new StringReader(yaml)));
        try
        {
            stream.Load(parser);
        }
        catch (YamlException e)
        {
            var message = e.InnerException is { } inner && inner.Message != e.Message ? $"{e.Message} ({inner.Message})" : e.Message;
            errors.Add(new ConfigError("", (int)e.Start.Line, (int)e.Start.Column, "YAML syntax error: " + message));
            return null;
        }
        catch (InvalidOperationException e)
        {
            // YamlDotNet 16 throws this, without a position, for some malformed flow collections (an unclosed
            // "[a, b"); the end of the last well-formed event is the best position there is.
            var mark = parser.LastEnd;
            errors.Add(new ConfigError("", (int)mark.Line, (int)mark.Column, $"YAML syntax error after this point: {e.Message}"));
            return null;
        }

        if (stream.Documents.Count == 0
            || stream.Documents[0].RootNode is YamlScalarNode { Style: ScalarStyle.Plain, Value: null or "" or "~" or "null" })
        {
            errors.Add(new ConfigError("", 0, 0, "the config file is empty; it needs at least upstreams and routes"));
            return null;
        }

        if (stream.Documents.Count > 1)
        {
            var second = stream.Documents[1].RootNode.Start;
            errors.Add(new ConfigError("", (int)second.Line, (int)second.Column, "only one YAML document is allowed; remove the '---' separator"));
            return null;
        }

        var root = stream.Documents[0].RootNode;
        if (root is not YamlMappingNode mapping)
        {
            errors.Add(new ConfigError("", (int)root.Start.Line, (int)root.Start.Column, $"the config must be a mapping of keys (server:, upstreams:, routes:, ...), found {Describe(root)}"));
            return null;
        }

        return mapping;
    }

    /// <summary>
    /// Expands <c>${NAME}</c> and <c>${NAME:-default}</c> in <paramref name="value"/>; see the class remarks.
    /// </summary>
    /// <returns>False, with <paramref name="error"/> set, on an unset variable without default or a malformed reference.</returns>
    internal static bool TryExpandEnvironment(string value, Func<string, string?> environment, out string result, out string? error)
    {
        error = null;
        result = value;
        if (!value.Contains('$', StringComparison.Ordinal))
        {
            return true;
        }

        var text = new StringBuilder(value.Length);
        var i = 0;
        while (i < value.Length)
        {
            if (value.AsSpan(i).StartsWith("$${"))
            {
                text.Append("${");
                i += 3;
                continue;
            }

            if (!value.AsSpan(i).StartsWith("${"))
            {
                text.Append(value[i]);
                i++;
                continue;
            }

            var close = value.IndexOf('}', i + 2);
            if (close < 0)
            {
                error = $"unterminated '${{' in '{value}'; write ${{NAME}} or ${{NAME:-default}} (or $${{ for a literal ${{)";
                return false;
            }

            var body = value[(i + 2)..close];
            var separator = body.IndexOf(":-", StringComparison.Ordinal);
            var name = separator >= 0 ? body[..separator] : body;
            if (!IsVariableName(name))
            {
                error = $"'${{{body}}}' is not a valid environment variable reference; names are letters, digits and '_'";
                return false;
            }

            var variable = environment(name);
            if (separator >= 0)
            {
                text.Append(string.IsNullOrEmpty(variable) ? body[(separator + 2)..] : variable);
            }
            else if (variable is null)
            {
                error = $"environment variable '{name}' is not set; set it or give a default with ${{{name}:-default}}";
                return false;
            }
            else
            {
                text.Append(variable);
            }

            i = close + 1;
        }

        result = text.ToString();
        return true;
    }

    private static bool IsVariableName(string name)
    {
        if (name.Length == 0 || char.IsAsciiDigit(name[0]))
        {
            return false;
        }

        foreach (var c in name)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '_'))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>The snake_case YAML key for a property name: <c>Http2Enabled</c> → <c>http2_enabled</c>.</summary>
    internal static string ToSnakeCase(string name)
    {
        var text = new StringBuilder(name.Length + 8);
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsUpper(c))
            {
                var previousIsWordEnd = i > 0 && (char.IsLower(name[i - 1]) || char.IsDigit(name[i - 1]));
                var acronymEnds = i > 0 && char.IsUpper(name[i - 1]) && i + 1 < name.Length && char.IsLower(name[i + 1]);
                if (previousIsWordEnd || acronymEnds)
                {
                    text.Append('_');
                }

                text.Append(char.ToLowerInvariant(c));
            }
            else
            {
                text.Append(c);
            }
        }

        return text.ToString();
    }

    /// <summary>Levenshtein edit distance, case-insensitive (a key written in the wrong case is still a near miss).</summary>
    internal static int EditDistance(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }

        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                var cost = char.ToLowerInvariant(a[i - 1]) == char.ToLowerInvariant(b[j - 1]) ? 0 : 1;
                current[j] = Math.Min(Math.Min(current[j - 1] + 1, previous[j] + 1), previous[j - 1] + cost);
            }

            (previous, current) = (current, previous);
        }

        return previous[b.Length];
    }

    /// <summary>The candidate nearest to <paramref name="value"/> within edit distance 2, or null.</summary>
    internal static string? Nearest(string value, IEnumerable<string> candidates)
    {
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var candidate in candidates)
        {
            var distance = EditDistance(value, candidate);
            if (distance < bestDistance)
            {
                best = candidate;
                bestDistance = distance;
            }
        }

        return bestDistance <= 2 ? best : null;
    }

    private static string Describe(YamlNode node) => node switch
    {
        YamlMappingNode => "a mapping",
        YamlSequenceNode => "a list",
        YamlScalarNode s => $"'{s.Value}'",
        _ => node.NodeType.ToString(),
    };

    /// <summary>
    /// Binds YAML nodes onto config records by reflection. A record is created with its parameterless constructor
    /// (so property initializers supply defaults) and only the keys present are set, through the init setters.
    /// </summary>
    private sealed class Binder(Func<string, string?> environment, ConfigSourceMap map, List<ConfigError> errors)
    {
        private static readonly ConcurrentDictionary<Type, RecordShape> Shapes = new();
        private readonly NullabilityInfoContext _nullability = new();

        public GatewayConfig? BindRoot(YamlMappingNode root)
        {
            map.Add("", (int)root.Start.Line, (int)root.Start.Column);
            return TryBindRecord(root, typeof(GatewayConfig), "", out var config) ? (GatewayConfig)config : null;
        }

        /// <summary>Binds any supported type; false (with an error recorded) when the value cannot be used.</summary>
        private bool TryBind(YamlNode node, Type type, bool nullable, string path, out object? value)
        {
            value = null;
            var underlying = Nullable.GetUnderlyingType(type);
            if (underlying is not null)
            {
                type = underlying;
                nullable = true;
            }

            string? text = null;
            if (node is YamlScalarNode scalar)
            {
                if (!TryExpand(scalar, path, out text))
                {
                    return false;
                }

                if (scalar.Style is ScalarStyle.Plain or ScalarStyle.Any && text is "" or "~" or "null" or "Null" or "NULL")
                {
                    if (nullable)
                    {
                        return true;
                    }

                    Error(path, node, $"a value is required here ({TypeName(type)}); remove the key to use the default");
                    return false;
                }
            }

            if (type == typeof(string))
            {
                return Scalar(node, text, path, "a string", static s => s, out value);
            }

            if (type == typeof(int))
            {
                return Scalar(node, text, path, "an integer", static s =>
                    int.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v : null, out value);
            }

            if (type == typeof(long))
            {
                return Scalar(node, text, path, "an integer", static s =>
                    long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) ? v : null, out value);
            }

            if (type == typeof(double))
            {
                return Scalar(node, text, path, "a number", static s =>
                    double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && double.IsFinite(v) ? v : null, out value);
            }

            if (type == typeof(bool))
            {
                // YAML 1.1's yes/no/on/off are accepted too: for a property that can only be a boolean there is no
                // ambiguity, and files written for other YAML readers use them.
                return Scalar(node, text, path, "true or false", static s => s.ToLowerInvariant() switch
                {
                    "true" or "yes" or "on" => true,
                    "false" or "no" or "off" => (object)false,
                    _ => null,
                }, out value);
            }

            if (type == typeof(UpstreamServerConfig) && text is not null)
            {
                return TryBindServerString(node, text, path, out value);
            }

            if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IReadOnlyList<>))
            {
                var element = type.GetGenericArguments()[0];
                if (element == typeof(UpstreamConfig) && node is YamlMappingNode upstreamMap)
                {
                    return TryBindUpstreamMap(upstreamMap, path, out value);
                }

                return TryBindList(node, element, path, out value);
            }

            if (type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IReadOnlyDictionary<,>)
                && type.GetGenericArguments()[0] == typeof(string))
            {
                return TryBindDictionary(node, type.GetGenericArguments()[1], path, out value);
            }

            if (type.IsClass && type.GetConstructor(Type.EmptyTypes) is not null)
            {
                return TryBindRecord(node, type, path, out value);
            }

            // A programmer error in the model, not in the file: fail loudly so the model's author sees it.
            throw new InvalidOperationException($"ConfigLoader cannot bind property type {type} at '{path}'.");
        }

        private bool Scalar(YamlNode node, string? text, string path, string expected, Func<string, object?> convert, out object? value)
        {
            value = null;
            if (text is null)
            {
                Error(path, node, $"expected {expected}, found {Describe(node)}");
                return false;
            }

            value = convert(text);
            if (value is null)
            {
                Error(path, node, $"expected {expected}, found '{text}'");
                return false;
            }

            return true;
        }

        private bool TryExpand(YamlScalarNode scalar, string path, out string? text)
        {
            if (TryExpandEnvironment(scalar.Value ?? "", environment, out var expanded, out var error))
            {
                text = expanded;
                return true;
            }

            text = null;
            Error(path, scalar, error!);
            return false;
        }

        private bool TryBindRecord(YamlNode node, Type type, string path, out object value)
        {
            value = Activator.CreateInstance(type)!;
            map.SetPath(value, path);
            if (node is not YamlMappingNode mapping)
            {
                Error(path, node, $"expected a mapping of keys ({string.Join(", ", ShapeOf(type).Keys.Take(4))}, ...), found {Describe(node)}");
                return false;
            }

            var shape = ShapeOf(type);
            foreach (var (keyNode, valueNode) in EffectiveEntries(mapping, path))
            {
                var key = ((YamlScalarNode)keyNode).Value ?? "";
                var childPath = Join(path, key);
                if (!shape.Properties.TryGetValue(key, out var property))
                {
                    Error(childPath, keyNode, UnknownKeyMessage(key, shape.Keys));
                    continue;
                }

                RecordLocation(childPath, keyNode, valueNode);
                var nullable = _nullability.Create(property).WriteState == NullabilityState.Nullable;
                if (TryBind(valueNode, property.PropertyType, nullable, childPath, out var child))
                {
                    property.SetValue(value, child);
                }
            }

            return true;
        }

        /// <summary>
        /// The key/value pairs of a mapping with YAML merge keys (<c>&lt;&lt;: *anchor</c> or a list of anchors)
        /// applied: merged keys first, explicit keys overriding them. Non-scalar keys are reported and skipped.
        /// </summary>
        private List<(YamlNode Key, YamlNode Value)> EffectiveEntries(YamlMappingNode mapping, string path)
        {
            var entries = new List<(YamlNode Key, YamlNode Value)>();
            var explicitKeys = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (key, _) in mapping.Children)
            {
                if (key is YamlScalarNode { Value: { } k } && k != "<<")
                {
                    explicitKeys.Add(k);
                }
            }

            foreach (var (key, value) in mapping.Children)
            {
                if (key is not YamlScalarNode scalarKey)
                {
                    Error(path, key, $"keys must be plain strings, found {Describe(key)}");
                    continue;
                }

                if (scalarKey.Value != "<<")
                {
                    entries.Add((key, value));
                    continue;
                }

                var sources = value is YamlSequenceNode list ? list.Children : (IList<YamlNode>)[value];
                foreach (var source in sources)
                {
                    if (source is not YamlMappingNode merged)
                    {
                        Error(Join(path, "<<"), source, "a merge key '<<' needs a mapping or a list of mappings (anchors)");
                        continue;
                    }

                    foreach (var entry in EffectiveEntries(merged, path))
                    {
                        var mergedKey = ((YamlScalarNode)entry.Key).Value ?? "";
                        if (explicitKeys.Add(mergedKey))
                        {
                            entries.Add(entry);
                        }
                    }
                }
            }

            return entries;
        }

        private bool TryBindList(YamlNode node, Type element, string path, out object? value)
        {
            value = null;
            if (node is not YamlSequenceNode sequence)
            {
                Error(path, node, $"expected a list ([a, b] or '- item' lines), found {Describe(node)}");
                return false;
            }

            var items = new List<object?>(sequence.Children.Count);
            for (var i = 0; i < sequence.Children.Count; i++)
            {
                var item = sequence.Children[i];
                var itemPath = $"{path}[{i}]";
                map.Add(itemPath, (int)item.Start.Line, (int)item.Start.Column);
                if (TryBind(item, element, nullable: false, itemPath, out var bound))
                {
                    items.Add(bound);
                }
            }

            var array = Array.CreateInstance(element, items.Count);
            for (var i = 0; i < items.Count; i++)
            {
                array.SetValue(items[i], i);
            }

            value = array;
            return true;
        }

        private bool TryBindDictionary(YamlNode node, Type valueType, string path, out object? value)
        {
            value = null;
            if (node is not YamlMappingNode mapping)
            {
                Error(path, node, $"expected a mapping of names to values, found {Describe(node)}");
                return false;
            }

            var dictionaryType = typeof(Dictionary<,>).MakeGenericType(typeof(string), valueType);
            var dictionary = (System.Collections.IDictionary)Activator.CreateInstance(dictionaryType, StringComparer.Ordinal)!;
            foreach (var (keyNode, valueNode) in EffectiveEntries(mapping, path))
            {
                var key = ((YamlScalarNode)keyNode).Value ?? "";
                var childPath = Join(path, key);
                RecordLocation(childPath, keyNode, valueNode);
                if (TryBind(valueNode, valueType, nullable: false, childPath, out var bound))
                {
                    dictionary[key] = bound;
                }
            }

            value = dictionary;
            return true;
        }

        /// <summary>Seed 001's map form: <c>upstreams: {oauth-service: {servers: [...]}}</c>; the key is the name.</summary>
        private bool TryBindUpstreamMap(YamlMappingNode mapping, string path, out object? value)
        {
            var upstreams = new List<UpstreamConfig>();
            foreach (var (keyNode, valueNode) in EffectiveEntries(mapping, path))
            {
                var name = ((YamlScalarNode)keyNode).Value ?? "";
                var upstreamPath = Join(path, name);
                map.Add(upstreamPath, (int)keyNode.Start.Line, (int)keyNode.Start.Column);
                map.Add(Join(upstreamPath, "name"), (int)keyNode.Start.Line, (int)keyNode.Start.Column);
                if (valueNode is YamlScalarNode { Style: ScalarStyle.Plain, Value: "" or "~" or "null" })
                {
                    Error(upstreamPath, keyNode, $"upstream '{name}' is empty; give it servers: [\"host:port\"]");
                    continue;
                }

                if (!TryBindRecord(valueNode, typeof(UpstreamConfig), upstreamPath, out var bound))
                {
                    continue;
                }

                var upstream = (UpstreamConfig)bound;
                if (upstream.Name.Length > 0 && upstream.Name != name)
                {
                    Error(Join(upstreamPath, "name"), valueNode, $"name '{upstream.Name}' differs from the key '{name}'; in the map form the key is the name, remove name:");
                }

                upstream = upstream with { Name = name };
                map.SetPath(upstream, upstreamPath);
                upstreams.Add(upstream);
            }

            value = upstreams.ToArray();
            return true;
        }

        /// <summary>Seed 001's server string: <c>"127.0.0.1:3001"</c>, <c>"[::1]:8080"</c>, <c>"api.internal:443"</c>.</summary>
        private bool TryBindServerString(YamlNode node, string text, string path, out object? value)
        {
            value = null;
            if (!ConfigValidator.TrySplitHostPort(text, out var host, out var port, out var problem))
            {
                Error(path, node, $"server '{text}': {problem}; write \"host:port\" or an object with host: and port:");
                return false;
            }

            map.Add(Join(path, "host"), (int)node.Start.Line, (int)node.Start.Column);
            map.Add(Join(path, "port"), (int)node.Start.Line, (int)node.Start.Column);
            value = new UpstreamServerConfig { Host = host, Port = port };
            map.SetPath(value, path);
            return true;
        }

        /// <summary>
        /// Remembers where a key's value is: at the value for a scalar (its column points at the bad value), at the
        /// key for a block (its first line is the key's line, not the next one).
        /// </summary>
        private void RecordLocation(string path, YamlNode key, YamlNode value)
        {
            var at = value is YamlScalarNode { Value.Length: > 0 } ? value : key;
            map.Add(path, (int)at.Start.Line, (int)at.Start.Column);
        }

        private void Error(string path, YamlNode node, string message) =>
            errors.Add(new ConfigError(path, (int)node.Start.Line, (int)node.Start.Column, message));

        private static string UnknownKeyMessage(string key, IReadOnlyList<string> known)
        {
            var nearest = Nearest(key, known);
            return nearest is not null
                ? $"unknown key '{key}'; did you mean '{nearest}'?"
                : $"unknown key '{key}' (known keys: {string.Join(", ", known)})";
        }

        private static string Join(string parent, string key) => parent.Length == 0 ? key : parent + "." + key;

        private static string TypeName(Type type) =>
            type == typeof(string) ? "a string"
            : type == typeof(int) || type == typeof(long) ? "an integer"
            : type == typeof(double) ? "a number"
            : type == typeof(bool) ? "true or false"
            : type.IsGenericType && type.GetGenericTypeDefinition() == typeof(IReadOnlyList<>) ? "a list"
            : "a mapping";

        private static RecordShape ShapeOf(Type type) => Shapes.GetOrAdd(type, static t => new RecordShape(t));
    }

    /// <summary>The YAML keys of one record type and the property each binds to.</summary>
    private sealed class RecordShape
    {
        public RecordShape(Type type)
        {
            var properties = new Dictionary<string, PropertyInfo>(StringComparer.Ordinal);
            var keys = new List<string>();
            foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                if (property.SetMethod is not { IsPublic: true } || property.GetIndexParameters().Length > 0)
                {
                    continue;
                }

                var names = property.GetCustomAttribute<YamlKeyAttribute>()?.Names ?? [ToSnakeCase(property.Name)];
                foreach (var name in names)
                {
                    properties.Add(name, property);
                }

                keys.Add(names[0]);
            }

            Properties = properties;
            Keys = keys;
        }

        /// <summary>Every accepted key (aliases included) to its property.</summary>
        public IReadOnlyDictionary<string, PropertyInfo> Properties { get; }

        /// <summary>The canonical key of each property, in declaration order, for messages.</summary>
        public IReadOnlyList<string> Keys { get; }
    }

    /// <summary>Remembers the end of the last event read, to place errors YamlDotNet reports without a position.</summary>
    private sealed class TrackingParser(IParser inner) : IParser
    {
        public Mark LastEnd { get; private set; } = Mark.Empty;

        public ParsingEvent? Current => inner.Current;

        public bool MoveNext()
        {
            if (inner.Current is { } current)
            {
                LastEnd = current.End;
            }

            return inner.MoveNext();
        }
    }
}

/// <summary>
/// Overrides the YAML key(s) a config property binds to; the first name is the canonical one used in messages, the
/// others are accepted aliases. Without it a property <c>FooBar</c> binds <c>foo_bar</c>.
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class YamlKeyAttribute(params string[] names) : Attribute
{
    /// <summary>The accepted keys, canonical first.</summary>
    public string[] Names { get; } = names.Length > 0 ? names : throw new ArgumentException("At least one key is required.", nameof(names));
}
