using System.Collections;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;
using Portico.Proxy.Http1;

namespace Portico.Server;

/// <summary>
/// The response headers of one request on Portico's HTTP/1.1 server. Besides values set as strings, it holds header
/// lines of an upstream's response head by position ("raw" entries): the own upstream client copies a head here without
/// decoding it, and the lines go out as the bytes they came in as, unless a phase reads or changes them first (then
/// they are decoded, once). Content-Length is kept as a number, as Kestrel keeps it.
/// </summary>
/// <remarks>
/// Values are checked as Kestrel checks them (no control characters but HTAB, ASCII only), so a phase or an upstream
/// gets the same <see cref="InvalidOperationException"/> on either server. One instance per connection, reset between
/// requests; not thread-safe.
/// </remarks>
internal sealed class ResponseHeaders : IHeaderDictionary
{
    private Entry[] _entries = new Entry[16];
    private int _count;
    private long? _contentLength;
    private byte[] _source = [];
    private int _sourceLength;
    private bool _readOnly;

    internal struct Entry
    {
        /// <summary>The known name's index in <see cref="HeaderStrings"/>, or -1.</summary>
        public int Known;
        public string? Name;
        public StringValues Value;
        /// <summary>True while the entry is a line of <see cref="Source"/>, not yet decoded.</summary>
        public bool Raw;
        public int LineStart;
        public int LineLength;
        public int NameLength;
        public int ValueStart;
        public int ValueLength;
        public bool Removed;
    }

    internal int EntryCount => _count;

    internal ref Entry EntryAt(int index) => ref _entries[index];

    /// <summary>The bytes the raw entries point into (this table's copy of an upstream head).</summary>
    internal ReadOnlySpan<byte> Source => _source.AsSpan(0, _sourceLength);

    /// <summary>Set once the head is on the wire: changes then throw, as Kestrel's do.</summary>
    internal void MakeReadOnly() => _readOnly = true;

    internal void Reset()
    {
        Array.Clear(_entries, 0, _count);
        _count = 0;
        _contentLength = null;
        _sourceLength = 0;
        _readOnly = false;
    }

    /// <summary>
    /// Copies <paramref name="head"/> (an upstream response head, a few hundred bytes) into this table after what it holds
    /// already (a line of <see cref="SetKnownAscii"/>), so its lines can be added as raw entries by offset: they stay
    /// valid however the caller reuses its buffer. Returns where the head starts (add it to offsets into the head).
    /// </summary>
    internal int AttachSource(ReadOnlySpan<byte> head)
    {
        var start = AppendSource(head.Length);
        head.CopyTo(_source.AsSpan(start));
        return start;
    }

    /// <summary>Room for <paramref name="length"/> more bytes at the end of the source; returns where they start.</summary>
    private int AppendSource(int length)
    {
        var start = _sourceLength;
        if (_source.Length - start < length)
        {
            var grown = new byte[Math.Max(start + length, Math.Max(1024, _source.Length * 2))];
            _source.AsSpan(0, start).CopyTo(grown);
            _source = grown;
        }
        _sourceLength = start + length;
        return start;
    }

    /// <summary>
    /// <see cref="SetKnown"/> with a value given as ASCII bytes the caller has checked (a generated request id): the
    /// line is kept as a raw entry, so it goes out as bytes and becomes a string only if something reads it.
    /// </summary>
    internal void SetKnownAscii(int known, ReadOnlySpan<byte> value)
    {
        ThrowIfReadOnly();
        if (_count > 0)
        {
            RemoveKnown(known);
        }
        var name = HeaderStrings.NameOf(known);
        var lineLength = name.Length + 2 + value.Length;
        var start = AppendSource(lineLength);
        var line = _source.AsSpan(start, lineLength);
        System.Text.Ascii.FromUtf16(name, line, out _);
        line[name.Length] = (byte)':';
        line[name.Length + 1] = (byte)' ';
        value.CopyTo(line[(name.Length + 2)..]);
        AddRaw(known, start, lineLength, name.Length, start + name.Length + 2, value.Length);
    }

    /// <summary>
    /// Adds a line of the attached source: known index, the line (without CRLF), where its name ends and its value is.
    /// Throws <see cref="InvalidOperationException"/> for a value Kestrel would refuse.
    /// </summary>
    internal void AddRaw(int known, int lineStart, int lineLength, int nameLength, int valueStart, int valueLength)
    {
        ThrowIfReadOnly();
        ValidateValue(Source.Slice(valueStart, valueLength));
        ref var entry = ref Append();
        entry.Known = known;
        entry.Raw = true;
        entry.LineStart = lineStart;
        entry.LineLength = lineLength;
        entry.NameLength = nameLength;
        entry.ValueStart = valueStart;
        entry.ValueLength = valueLength;
        if (known >= 0)
        {
            entry.Name = HeaderStrings.NameOf(known);
        }
    }

    /// <summary>Removes what a phase set under this known name before the upstream's head is copied in (the upstream's value wins).</summary>
    internal void RemoveKnown(int known)
    {
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (!entry.Removed && entry.Known == known)
            {
                entry.Removed = true;
            }
        }
    }

    /// <summary>
    /// Sets a known header to a value the caller has already checked (the request id: generated hex, or a client's id
    /// that passed <see cref="Proxy.HeaderRules.IsValidRequestId"/>), without a lookup by string.
    /// </summary>
    internal void SetKnown(int known, string value)
    {
        ThrowIfReadOnly();
        if (_count > 0)
        {
            RemoveKnown(known);
        }
        ref var entry = ref Append();
        entry.Known = known;
        entry.Name = HeaderStrings.NameOf(known);
        entry.Value = value;
    }

    /// <summary>Removes what a phase set under this unknown name (see <see cref="RemoveKnown"/>).</summary>
    internal void RemoveUnknown(ReadOnlySpan<byte> name)
    {
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (!entry.Removed && entry.Known < 0 && !entry.Raw && entry.Name!.Length == name.Length && Ascii.EqualsIgnoreCase(name, entry.Name))
            {
                entry.Removed = true;
            }
        }
    }

    /// <summary>True when a live entry has an unknown name equal to <paramref name="name"/> that a phase set (not a raw line).</summary>
    internal bool HasUnknownSet(ReadOnlySpan<byte> name)
    {
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (!entry.Removed && entry.Known < 0 && !entry.Raw && entry.Name!.Length == name.Length && Ascii.EqualsIgnoreCase(name, entry.Name))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>The name of an entry (decoded once for unknown raw names).</summary>
    internal string NameOf(ref Entry entry) =>
        entry.Name ??= Encoding.Latin1.GetString(Source.Slice(entry.LineStart, entry.NameLength));

    internal StringValues ValueOf(ref Entry entry)
    {
        if (entry.Raw)
        {
            Decode(ref entry);
        }
        return entry.Value;
    }

    public StringValues this[string key]
    {
        get => TryGetValue(key, out var value) ? value : StringValues.Empty;
        set
        {
            ArgumentNullException.ThrowIfNull(key);
            ThrowIfReadOnly();
            var known = HeaderStrings.Find(key);
            if (known == HeaderStrings.ContentLength)
            {
                _contentLength = StringValues.IsNullOrEmpty(value) ? null : ParseContentLength(value);
                return;
            }
            RemoveAll(key, known);
            if (!StringValues.IsNullOrEmpty(value))
            {
                AddValue(key, known, value);
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
        get => _contentLength;
        set
        {
            ThrowIfReadOnly();
            if (value < 0)
            {
                throw new ArgumentOutOfRangeException(nameof(value), "Content-Length cannot be negative");
            }
            _contentLength = value;
        }
    }

    public ICollection<string> Keys
    {
        get
        {
            var keys = new List<string>();
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
            var values = new List<StringValues>();
            foreach (var pair in this)
            {
                values.Add(pair.Value);
            }
            return values;
        }
    }

    public int Count
    {
        get
        {
            var count = _contentLength is null ? 0 : 1;
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

    public bool IsReadOnly => _readOnly;

    public void Add(string key, StringValues value)
    {
        if (ContainsKey(key))
        {
            throw new ArgumentException($"the header '{key}' is already present", nameof(key));
        }
        this[key] = value;
    }

    public void Add(KeyValuePair<string, StringValues> item) => Add(item.Key, item.Value);

    public void Clear()
    {
        ThrowIfReadOnly();
        for (var i = 0; i < _count; i++)
        {
            _entries[i].Removed = true;
        }
        _contentLength = null;
    }

    public bool Contains(KeyValuePair<string, StringValues> item) =>
        TryGetValue(item.Key, out var value) && StringValues.Equals(value, item.Value);

    public bool ContainsKey(string key) => TryGetValue(key, out _);

    public void CopyTo(KeyValuePair<string, StringValues>[] array, int arrayIndex)
    {
        foreach (var pair in this)
        {
            array[arrayIndex++] = pair;
        }
    }

    public bool Remove(string key)
    {
        ThrowIfReadOnly();
        var known = HeaderStrings.Find(key);
        if (known == HeaderStrings.ContentLength)
        {
            var had = _contentLength is not null;
            _contentLength = null;
            return had;
        }
        return RemoveAll(key, known);
    }

    public bool Remove(KeyValuePair<string, StringValues> item) => Contains(item) && Remove(item.Key);

    public bool TryGetValue(string key, [MaybeNullWhen(false)] out StringValues value)
    {
        var known = HeaderStrings.Find(key);
        if (known == HeaderStrings.ContentLength)
        {
            value = _contentLength is { } length ? length.ToString(CultureInfo.InvariantCulture) : default;
            return _contentLength is not null;
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
                if (!_entries[j].Removed && SameName(i, j))
                {
                    value = StringValues.Concat(value, ValueOf(ref _entries[j]));
                }
            }
            yield return new KeyValuePair<string, StringValues>(name, value);
        }
        if (_contentLength is { } length)
        {
            yield return new KeyValuePair<string, StringValues>("Content-Length", length.ToString(CultureInfo.InvariantCulture));
        }
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>Throws as Kestrel does for a value it would not send: a control character other than HTAB, or a non-ASCII byte.</summary>
    internal static void ValidateValue(ReadOnlySpan<byte> value)
    {
        var bad = value.IndexOfAnyExceptInRange((byte)0x20, (byte)0x7E);
        while (bad >= 0)
        {
            if (value[bad] != (byte)'\t')
            {
                throw new InvalidOperationException($"Invalid non-ASCII or control character in header: 0x{value[bad]:X2}");
            }
            value = value[(bad + 1)..];
            bad = value.IndexOfAnyExceptInRange((byte)0x20, (byte)0x7E);
        }
    }

    private static void ValidateValue(string value)
    {
        foreach (var c in value)
        {
            if ((c < 0x20 && c != '\t') || c > 0x7E)
            {
                throw new InvalidOperationException($"Invalid non-ASCII or control character in header: 0x{(int)c:X4}");
            }
        }
    }

    private static void ValidateName(string name)
    {
        if (name.Length == 0)
        {
            throw new InvalidOperationException("A header name cannot be empty");
        }
        foreach (var c in name)
        {
            if (c > 0x7E || !Http1Syntax.IsTokenChar((byte)c))
            {
                throw new InvalidOperationException($"Invalid character in header name '{name}'");
            }
        }
    }

    private static long ParseContentLength(StringValues value)
    {
        if (value.Count != 1 || !long.TryParse(value[0], NumberStyles.None, CultureInfo.InvariantCulture, out var length))
        {
            throw new InvalidOperationException($"Invalid Content-Length: \"{value}\". Value must be a positive integral number.");
        }
        return length;
    }

    private void ThrowIfReadOnly()
    {
        if (_readOnly)
        {
            throw new InvalidOperationException("Headers are read-only, response has already started.");
        }
    }

    private void Decode(ref Entry entry)
    {
        var source = Source;
        entry.Name ??= Encoding.Latin1.GetString(source.Slice(entry.LineStart, entry.NameLength));
        var bytes = source.Slice(entry.ValueStart, entry.ValueLength);
        entry.Value = bytes.IsEmpty ? string.Empty : Encoding.Latin1.GetString(bytes);
        entry.Raw = false;
    }

    private ref Entry Append()
    {
        if (_count == _entries.Length)
        {
            Array.Resize(ref _entries, _entries.Length * 2);
        }
        return ref _entries[_count++];
    }

    private void AddValue(string key, int known, StringValues value)
    {
        if (known < 0)
        {
            ValidateName(key);
        }
        foreach (var item in value)
        {
            ValidateValue(item ?? string.Empty);
        }
        ref var entry = ref Append();
        entry.Known = known;
        entry.Name = known >= 0 ? HeaderStrings.NameOf(known) : key;
        entry.Value = value;
    }

    private bool RemoveAll(string key, int known)
    {
        var removed = false;
        for (var i = 0; i < _count; i++)
        {
            ref var entry = ref _entries[i];
            if (Matches(ref entry, key, known))
            {
                entry.Removed = true;
                removed = true;
            }
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
        return entry.NameLength == key.Length && Ascii.EqualsIgnoreCase(Source.Slice(entry.LineStart, entry.NameLength), key);
    }

    private bool SameName(int i, int j)
    {
        ref var a = ref _entries[i];
        ref var b = ref _entries[j];
        if (a.Known >= 0 || b.Known >= 0)
        {
            return a.Known == b.Known;
        }
        return string.Equals(NameOf(ref a), NameOf(ref b), StringComparison.OrdinalIgnoreCase);
    }

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
