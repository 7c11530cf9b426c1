using System.Collections;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using System.Text.RegularExpressions;
using Portico.Config;

namespace Portico.Admin;

/// <summary>
/// Writes a loaded <see cref="GatewayConfig"/> as JSON for <c>GET /api/config</c>, with the YAML key names (defaults
/// filled in) and every secret replaced by <see cref="Redacted"/>.
/// </summary>
/// <remarks>
/// <para>
/// What counts as a secret is decided by the key's name, not by a list of known keys: a string under a key whose name
/// contains <c>secret</c>, <c>password</c>, <c>passwd</c>, <c>token</c>, <c>key</c> or <c>credential</c> (any case) is
/// redacted, so a key added later is covered without anyone remembering to list it. That also covers the values of
/// map entries (<c>security.headers.custom_headers: {X-Api-Key: ...}</c>). Three keys match the words but hold no
/// secret and are shown: <c>key_path</c> (where the TLS key file is), <c>key_extraction</c> (a rate-limit mode name) and
/// <c>token_validation_endpoint</c> (a URL path). Numbers and booleans are never secrets (<c>token_expiry_seconds</c>).
/// </para>
/// <para>
/// Credentials inside URLs are redacted wherever they appear (<c>redis://:pw@host</c> becomes
/// <c>redis://***@host</c>, <c>?password=pw</c> becomes <c>?password=***</c>), since connection strings carry passwords
/// under keys like <c>redis_url</c>. A null value stays null, so "not set" remains visible.
/// </para>
/// </remarks>
internal static partial class ConfigJson
{
    /// <summary>What a secret is replaced by.</summary>
    public const string Redacted = "***";

    private static readonly string[] SecretWords = ["secret", "password", "passwd", "token", "key", "credential"];

    private static readonly HashSet<string> NotSecret = new(StringComparer.Ordinal) { "key_path", "key_extraction", "token_validation_endpoint" };

    /// <summary>Writes <paramref name="config"/> as one JSON object.</summary>
    public static void Write(Utf8JsonWriter writer, GatewayConfig config)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ArgumentNullException.ThrowIfNull(config);
        WriteValue(writer, config, secret: false);
    }

    /// <summary>True when a value under <paramref name="key"/> is to be hidden.</summary>
    internal static bool IsSecretKey(string key)
    {
        if (NotSecret.Contains(key))
        {
            return false;
        }
        foreach (var word in SecretWords)
        {
            if (key.Contains(word, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>Hides the user information and secret-looking query parameters of a URL; other text is returned as is.</summary>
    internal static string RedactUrlCredentials(string value)
    {
        if (!value.Contains("://", StringComparison.Ordinal))
        {
            return value;
        }
        var result = UserInfo().Replace(value, "$1" + Redacted + "@");
        return SecretQuery().Replace(result, "$1=" + Redacted);
    }

    private static void WriteValue(Utf8JsonWriter writer, object? value, bool secret)
    {
        switch (value)
        {
            case null:
                writer.WriteNullValue();
                break;
            case string text:
                writer.WriteStringValue(secret && text.Length > 0 ? Redacted : RedactUrlCredentials(text));
                break;
            case bool flag:
                writer.WriteBooleanValue(flag);
                break;
            case int or long or short or byte:
                writer.WriteNumberValue(Convert.ToInt64(value, CultureInfo.InvariantCulture));
                break;
            case double or float or decimal:
                writer.WriteNumberValue(Convert.ToDouble(value, CultureInfo.InvariantCulture));
                break;
            case Enum:
                writer.WriteStringValue(value.ToString());
                break;
            case IEnumerable<KeyValuePair<string, string>> map:
                writer.WriteStartObject();
                foreach (var (key, item) in map)
                {
                    writer.WritePropertyName(key);
                    WriteValue(writer, item, secret || IsSecretKey(key));
                }
                writer.WriteEndObject();
                break;
            case IEnumerable list:
                writer.WriteStartArray();
                foreach (var item in list)
                {
                    WriteValue(writer, item, secret);
                }
                writer.WriteEndArray();
                break;
            default:
                WriteRecord(writer, value, secret);
                break;
        }
    }

    private static void WriteRecord(Utf8JsonWriter writer, object record, bool secret)
    {
        writer.WriteStartObject();
        // The properties ConfigLoader binds (public, settable by init), under the key it binds them to.
        foreach (var property in record.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (property.SetMethod is not { IsPublic: true } || property.GetIndexParameters().Length > 0)
            {
                continue;
            }
            var key = property.GetCustomAttribute<YamlKeyAttribute>()?.Names[0] ?? ConfigLoader.ToSnakeCase(property.Name);
            writer.WritePropertyName(key);
            WriteValue(writer, property.GetValue(record), secret || IsSecretKey(key));
        }
        writer.WriteEndObject();
    }

    /// <summary><c>scheme://user:password@</c>: group 1 is the scheme and slashes.</summary>
    [GeneratedRegex(@"([A-Za-z][A-Za-z0-9+.\-]*://)[^@/?#\s]+@")]
    private static partial Regex UserInfo();

    /// <summary>A query parameter whose name looks secret: group 1 is the name.</summary>
    [GeneratedRegex(@"([?&;][^=&;#\s]*(?:secret|password|passwd|token|key|credential)[^=&;#\s]*)=[^&;#\s]*", RegexOptions.IgnoreCase)]
    private static partial Regex SecretQuery();
}
