using System.Collections;
using System.Diagnostics.CodeAnalysis;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;

namespace Portico.Server;

/// <summary>
/// The request headers of one request on Portico's HTTP/1.1 server, over the raw bytes of the request head: a line
/// becomes a string only when something asks for its value, and a line nobody changed is forwarded upstream as the
/// bytes it arrived as (<see cref="Proxy.HttpForwarder"/>). Known names (<see cref="RequestHeaderNames"/>) are found by
/// index and tracked in a bit mask, so asking for an absent known header costs one bit test. Values of known names are
/// remembered per connection, so a browser's User-Agent or Accept is decoded once per connection, not per request (as
/// Kestrel reuses header strings). Repeated names keep every line; reading one gives all its values.
/// </summary>
/// <remarks>
/// One instance per connection, reset between requests; not thread-safe (a request is one logical flow). The head's
/// bytes stay valid until the request ends: they are the connection's input buffer, released only then.
/// </remarks>
internal sealed class RequestHeaders : IHeaderDictionary
{
    private Entry[] _entries = new Entry[16];
    private int _count;
    private int _live;
    private ReadOnlyMemory<byte> _head;
    private ulong _present;
    private readonly string?[] _lastValues = new string?[RequestHeaderNames.Count];

    /// <summary>One header line, or one value set by a phase.</summary>
    internal struct Entry
    {
        /// <summary>The known name's index, or -1.</summary>
        public int Known;
        public int LineStart;
        public int NameLength;
        public int ValueStart;
        public int ValueLength;
        /// <summary>The name, once decoded (known names: the shared string).</summary>
        public string? Name;
        /// <summary>The value, once decoded or set.</summary>
        public StringValues Value;
        /// <summary>True while the entry is still the line as received: forwardable as bytes.</summary>
        public bool Raw;
        public bool Decoded;
        public bool Removed;
    }

    /// <summary>The request head the raw entries point into.</summary>
    internal ReadOnlySpan<byte> Head => _head.Span;

    /// <summary>How many entries, removed ones included (for <see cref="EntryAt"/>).</summary>
    internal int EntryCount => _count;

    internal ref Entry EntryAt(int index) => ref _entries[index];

    /// <summary>Starts a new request whose head is <paramref name="head"/>.</summary>
    internal void Reset(ReadOnlyMemory<byte> head)
    {
        Array.Clear(_entries, 0, _count);
        _count = 0;
        _live = 0;
        _present = 0;
        _head = head;
    }

    /// <summary>Points the entries at <paramref name="head"/>, a copy of the old head with more after it (HTTP/2 builds its head as fields arrive).</summary>
    internal void Reattach(ReadOnlyMemory<byte> head) => _head = head;

    /// <summary>Drops every reference into the head (the request is over).</summary>
    internal void Release()
    {
        Array.Clear(_entries, 0, _count);
        _count = 0;
        _live = 0;
        _present = 0;
        _head = default;
    }

    /// <summary>Adds a line of the head, as the parser found it.</summary>
    internal void AddRaw(int known, int lineStart, int nameLength, int valueStart, int valueLength)
    {
        ref var entry = ref Append();
        entry.Known = known;
        entry.LineStart = lineStart;
        entry.NameLength = nameLength;
        entry.ValueStart = valueStart;
        entry.ValueLength = valueLength;
        entry.Raw = true;
        if (known >= 0)
        {
            _present |= 1UL << known;
            entry.Name = RequestHeaderNames.NameOf(known);
        }
    }

    /// <summary>True when a header with this known name is present.</summary>
    internal bool Has(int known) => (_present & (1UL << known)) != 0;

    /// <summary>The value bytes of the first line with this known name (empty when absent or changed by a phase).</summary>
    internal ReadOnlySpan<byte> RawValue(int known)
    {
        if (!Has(known))
        {
            return default;
        }
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (entry.Known == known && !entry.Removed)
            {
                return entry.Raw ? _head.Span.Slice(entry.ValueStart, entry.ValueLength) : default;
            }
        }
        return default;
    }

    /// <summary>
    /// The value of the one line with this known name, as a string (decoded once); null when there is none or more than
    /// one (then <c>this[name]</c> joins them).
    /// </summary>
    internal string? SingleValue(int known)
    {
        if (!Has(known))
        {
            return null;
        }
        var index = -1;
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (entry.Known == known && !entry.Removed)
            {
                if (index >= 0)
                {
                    return null;
                }
                index = i;
            }
        }
        if (index < 0)
        {
            return null;
        }
        var value = ValueOf(ref _entries[index]);
        return value.Count == 1 ? value[0] : null;
    }

    /// <summary>The name of an entry as a string (decoded once).</summary>
    internal string NameOf(ref Entry entry) =>
        entry.Name ??= Encoding.Latin1.GetString(_head.Span.Slice(entry.LineStart, entry.NameLength));

    /// <summary>The value of one entry as a string (decoded once; known names reuse the connection's last string).</summary>
    internal StringValues ValueOf(ref Entry entry)
    {
        if (entry.Decoded || !entry.Raw)
        {
            return entry.Value;
        }
        var bytes = _head.Span.Slice(entry.ValueStart, entry.ValueLength);
        string text;
        if (entry.Known >= 0 && RequestHeaderNames.CachesValue(entry.Known))
        {
            var last = _lastValues[entry.Known];
            if (last is not null && last.Length == bytes.Length && Ascii.Equals(bytes, last))
            {
                text = last;
            }
            else
            {
                text = bytes.IsEmpty ? string.Empty : Encoding.Latin1.GetString(bytes);
                _lastValues[entry.Known] = text;
            }
        }
        else
        {
            text = bytes.IsEmpty ? string.Empty : Encoding.Latin1.GetString(bytes);
        }
        entry.Value = text;
        entry.Decoded = true;
        return text;
    }

    public StringValues this[string key]
    {
        get => TryGetValue(key, out var value) ? value : StringValues.Empty;
        set
        {
            ArgumentNullException.ThrowIfNull(key);
            RemoveAll(key, RequestHeaderNames.Find(key));
            if (!StringValues.IsNullOrEmpty(value))
            {
                AddValue(key, value);
            }
        }
    }

    StringValues IDictionary<string, StringValues>.this[string key]
    {
        get => TryGetValue(key, out var value) ? value : throw new KeyNotFoundException(key);
        set => this[key] = value;
    }

    public long? ContentLength
    {
        get
        {
            var value = this["Content-Length"];
            return value.Count == 1 && value[0] is { } text && long.TryParse(text, System.Globalization.NumberStyles.None, null, out var length)
                ? length
                : null;
        }
        set => this["Content-Length"] = value is { } length ? length.ToString(System.Globalization.CultureInfo.InvariantCulture) : StringValues.Empty;
    }

    public ICollection<string> Keys
    {
        get
        {
            var keys = new List<string>(_live);
            foreach (var pair in this)
            {
                keys.Add(pair.Key);
            }
            return keys;
        }
    }

    public ICollection<StringValues> Values
    {
        get
        {
            var values = new List<StringValues>(_live);
            foreach (var pair in this)
            {
                values.Add(pair.Value);
            }
            return values;
        }
    }

    /// <summary>Distinct names (a repeated name counts once), as Kestrel counts.</summary>
    public int Count
    {
        get
        {
            var count = 0;
            for (var i = 0; i < _count; i++)
            {
                if (!_entries[i].Removed && FirstOfName(i))
                {
                    count++;
                }
            }
            return count;
        }
    }

    public bool IsReadOnly => false;

    public void Add(string key, StringValues value)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (ContainsKey(key))
        {
            throw new ArgumentException($"the header '{key}' is already present", nameof(key));
        }
        AddValue(key, value);
    }

    public void Add(KeyValuePair<string, StringValues> item) => Add(item.Key, item.Value);

    public void Clear()
    {
        for (var i = 0; i < _count; i++)
        {
            _entries[i].Removed = true;
        }
        _live = 0;
        _present = 0;
    }

    public bool Contains(KeyValuePair<string, StringValues> item) =>
        TryGetValue(item.Key, out var value) && StringValues.Equals(value, item.Value);

    public bool ContainsKey(string key)
    {
        var known = RequestHeaderNames.Find(key);
        if (known >= 0)
        {
            return Has(known);
        }
        for (var i = 0; i < _count; i++)
        {
            if (Matches(ref _entries[i], key, known))
            {
                return true;
            }
        }
        return false;
    }

    public void CopyTo(KeyValuePair<string, StringValues>[] array, int arrayIndex)
    {
        foreach (var pair in this)
        {
            array[arrayIndex++] = pair;
        }
    }

    public bool Remove(string key) => RemoveAll(key, RequestHeaderNames.Find(key));

    public bool Remove(KeyValuePair<string, StringValues> item) => Contains(item) && Remove(item.Key);

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out StringValues value)
    {
        var known = RequestHeaderNames.Find(key);
        if (known >= 0 && !Has(known))
        {
            value = default;
            return false;
        }
        var found = false;
        value = default;
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (!Matches(ref entry, key, known))
            {
                continue;
            }
            value = found ? StringValues.Concat(value, ValueOf(ref entry)) : ValueOf(ref entry);
            found = true;
        }
        return found;
    }

    public IEnumerator<KeyValuePair<string, StringValues>> GetEnumerator()
    {
        for (var i = 0; i < _count; i++)
        {
            if (_entries[i].Removed || !FirstOfName(i))
            {
                continue;
            }
            var name = NameOf(ref _entries[i]);
            var value = ValueOf(ref _entries[i]);
            for (var j = i + 1; j < _count; j++)
            {
                if (SameName(i, j))
                {
                    value = StringValues.Concat(value, ValueOf(ref _entries[j]));
                }
            }
            yield return new KeyValuePair<string, StringValues>(name, value);
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    private ref Entry Append()
    {
        if (_count == _entries.Length)
        {
            Array.Resize(ref _entries, _entries.Length * 2);
        }
        _live++;
        return ref _entries[_count++];
    }

    private void AddValue(string key, StringValues value)
    {
        var known = RequestHeaderNames.Find(key);
        ref var entry = ref Append();
        entry.Known = known;
        entry.Name = known >= 0 ? RequestHeaderNames.NameOf(known) : key;
        entry.Value = value;
        entry.Decoded = true;
        if (known >= 0)
        {
            _present |= 1UL << known;
        }
    }

    private bool RemoveAll(string key, int known)
    {
        if (known >= 0 && !Has(known))
        {
            return false;
        }
        var removed = false;
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (Matches(ref entry, key, known))
            {
                entry.Removed = true;
                _live--;
                removed = true;
            }
        }
        if (known >= 0)
        {
            _present &= ~(1UL << known);
        }
        return removed;
    }

    private bool Matches(ref Entry entry, string key, int known)
    {
        if (entry.Removed)
        {
            return false;
        }
        if (known >= 0 || entry.Known >= 0)
        {
            return entry.Known == known;
        }
        if (entry.Name is { } name)
        {
            return string.Equals(name, key, StringComparison.OrdinalIgnoreCase);
        }
        return entry.NameLength == key.Length && Ascii.EqualsIgnoreCase(_head.Span.Slice(entry.LineStart, entry.NameLength), key);
    }

    private bool SameName(int i, int j)
    {
        ref var a = ref _entries[i];
        ref var b = ref _entries[j];
        if (b.Removed)
        {
            return false;
        }
        if (a.Known >= 0 || b.Known >= 0)
        {
            return a.Known == b.Known;
        }
        return string.Equals(NameOf(ref a), NameOf(ref b), StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>True when no earlier live entry has the same name as entry <paramref name="index"/>.</summary>
    private bool FirstOfName(int index)
    {
        for (var i = 0; i < index; i++)
        {
            if (!_entries[i].Removed && SameName(i, index))
            {
                return false;
            }
        }
        return true;
    }
}
