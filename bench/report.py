#!/usr/bin/python3
"""Turn the raw rows of bench/run.sh into the markdown report (stdout) and the JSON results file.

    report.py META RUNS_TSV IDLE_TSV JSON_OUT

META is key=value lines (date, host, versions, settings). RUNS_TSV has one row per measured load run, IDLE_TSV
one row per idle-connection run; the columns are listed in RUN_COLUMNS and IDLE_COLUMNS (run.sh writes them in
this order). With several rounds every figure is the median over rounds, and ratios are ratios of medians; the
"paired" ratio is the geometric mean over rounds of Portico's figure over the peer's in the same round (rounds are
interleaved, so this cancels the drift of a noisy machine between rounds).
Standard library only (Debian's /usr/bin/python3).
"""
import json
import statistics
import sys

RUN_COLUMNS = [
    ("round", int), ("scenario", str), ("case", str), ("proxy", str), ("connections", int), ("streams", int),
    ("body_bytes", int), ("duration_s", int), ("rps", float), ("p50_ms", float), ("p75_ms", float),
    ("p90_ms", float), ("p99_ms", float), ("requests", int), ("socket_errors", int), ("non_2xx", int),
    ("proxy_cpu_s", float), ("origin_cpu_s", float), ("upstream_new_conns", int),
]
IDLE_COLUMNS = [
    ("round", int), ("proxy", str), ("connections", int), ("ok", int), ("failed", int), ("still_open", int),
    ("rss_before_kib", int), ("rss_with_kib", int), ("rss_peak_kib", int), ("open_s", float),
    ("upstream_new_conns", int),
]
PEERS = ["nginx", "haproxy", "yarp"]
NAMES = {"nginx": "nginx", "haproxy": "HAProxy", "portico": "Portico", "yarp": "YARP"}
MIB = 1048576.0


def read_tsv(path, columns):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            fields = line.split("\t")
            rows.append({name: conv(v) for (name, conv), v in zip(columns, fields)})
    return rows


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def paired_ratio(runs, scenario, case, proxy, key):
    """Geometric mean over rounds of Portico's runs[key] divided by proxy's in the same round."""
    by_round = {}
    for r in runs:
        if r["scenario"] == scenario and r["case"] == case and r["proxy"] in ("portico", proxy) and r[key]:
            by_round.setdefault(r["round"], {})[r["proxy"]] = r[key]
    ratios = [v["portico"] / v[proxy] for v in by_round.values() if "portico" in v and proxy in v]
    return round(statistics.geometric_mean(ratios), 3) if ratios else None


def enrich_run(r):
    """Derived figures of one load run."""
    r["req_per_cpu_s"] = round(r["requests"] / r["proxy_cpu_s"]) if r["proxy_cpu_s"] > 0 else None
    r["proxy_cpu_pct"] = round(100.0 * r["proxy_cpu_s"] / r["duration_s"], 1)
    r["mib_s"] = round(r["rps"] * r["body_bytes"] / MIB, 2)
    r["mib_per_cpu_s"] = round(r["requests"] * r["body_bytes"] / MIB / r["proxy_cpu_s"], 1) if r["proxy_cpu_s"] > 0 else None
    up = r["upstream_new_conns"]
    if up < 0 or r["requests"] <= 0:  # -1: the origin's counter was not available
        r["upstream_new_conns"] = None
        r["upstream_conns_per_1k_req"] = None
        r["upstream_reuse_pct"] = None
    else:
        r["upstream_conns_per_1k_req"] = round(1000.0 * up / r["requests"], 3)
        r["upstream_reuse_pct"] = round(100.0 * (1 - up / r["requests"]), 3)
    return r


def summarize_load(runs, proxies):
    keys = []  # (scenario, case) in first-seen order
    for r in runs:
        k = (r["scenario"], r["case"])
        if k not in keys:
            keys.append(k)
    summary = []
    for scenario, case in keys:
        group = {}
        for p in proxies:
            rs = [r for r in runs if r["scenario"] == scenario and r["case"] == case and r["proxy"] == p]
            if not rs:
                continue
            group[p] = {
                "scenario": scenario, "case": case, "proxy": p,
                "connections": rs[0]["connections"], "streams": rs[0]["streams"], "body_bytes": rs[0]["body_bytes"],
                "rps": round(median(r["rps"] for r in rs), 1),
                "p50_ms": round(median(r["p50_ms"] for r in rs), 3),
                "p99_ms": round(median(r["p99_ms"] for r in rs), 3),
                "req_per_cpu_s": median(r["req_per_cpu_s"] for r in rs),
                "proxy_cpu_pct": round(median(r["proxy_cpu_pct"] for r in rs), 1),
                "mib_s": round(median(r["mib_s"] for r in rs), 2),
                "mib_per_cpu_s": median(r["mib_per_cpu_s"] for r in rs),
                "upstream_new_conns": median(r["upstream_new_conns"] for r in rs),
                "upstream_conns_per_1k_req": median(r["upstream_conns_per_1k_req"] for r in rs),
                "upstream_reuse_pct": median(r["upstream_reuse_pct"] for r in rs),
                "socket_errors": sum(r["socket_errors"] for r in rs),
                "non_2xx": sum(r["non_2xx"] for r in rs),
                "rounds": len(rs),
                "rps_min": min(r["rps"] for r in rs),
                "rps_max": max(r["rps"] for r in rs),
            }
        for p, s in group.items():
            for peer in PEERS:  # the row's req/s over the peer's (the existing JSON's meaning)
                s[f"ratio_vs_{peer}"] = ratio(s["rps"], group[peer]["rps"]) if peer in group else None
            port = group.get("portico")
            s["portico_over_this"] = {  # Portico's figure divided by this row's
                "rps": ratio(port["rps"], s["rps"]) if port else None,
                "mib_s": ratio(port["mib_s"], s["mib_s"]) if port else None,
                "p99_ms": ratio(port["p99_ms"], s["p99_ms"]) if port else None,
                "req_per_cpu_s": ratio(port["req_per_cpu_s"], s["req_per_cpu_s"]) if port else None,
                "req_per_cpu_s_paired": paired_ratio(runs, scenario, case, p, "req_per_cpu_s") if port else None,
            }
            summary.append(s)
    return summary


def summarize_idle(idle, proxies):
    summary = []
    for p in proxies:
        rs = [r for r in idle if r["proxy"] == p]
        if not rs:
            continue
        per_conn = []
        for r in rs:
            n = r["ok"] if r["ok"] > 0 else r["connections"]
            per_conn.append((r["rss_with_kib"] - r["rss_before_kib"]) / n)
        summary.append({
            "proxy": p, "connections": rs[0]["connections"],
            "ok": median(r["ok"] for r in rs), "failed": sum(r["failed"] for r in rs),
            "still_open": median(r["still_open"] for r in rs) if all(r["still_open"] >= 0 for r in rs) else None,
            "rss_before_mib": round(median(r["rss_before_kib"] for r in rs) / 1024, 1),
            "rss_with_mib": round(median(r["rss_with_kib"] for r in rs) / 1024, 1),
            "rss_peak_mib": round(median(r["rss_peak_kib"] for r in rs) / 1024, 1),
            "kib_per_idle_conn": round(median(per_conn), 2),
            "open_s": median(r["open_s"] for r in rs),
            "upstream_new_conns": median(r["upstream_new_conns"] for r in rs if r["upstream_new_conns"] >= 0),
            "rounds": len(rs),
        })
    port = next((s for s in summary if s["proxy"] == "portico"), None)
    for s in summary:
        s["portico_over_this"] = {
            "rss_with_mib": ratio(port["rss_with_mib"], s["rss_with_mib"]) if port else None,
            "kib_per_idle_conn": ratio(port["kib_per_idle_conn"], s["kib_per_idle_conn"]) if port else None,
        }
    return summary


def num(v, fmt="{:,.0f}"):
    return "n/a" if v is None else fmt.format(v)


def rat(row, key):
    if row["proxy"] == "portico":
        return "—"
    return num(row["portico_over_this"][key], "{:.2f}")


def table(header, rows):
    out = ["| " + " | ".join(h for h, _ in header) + " |",
           "|" + "|".join("---" if align == "l" else "---:" for _, align in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main():
    meta_path, runs_path, idle_path, json_path = sys.argv[1:5]
    meta = {}
    with open(meta_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    proxies = meta["proxies"].split()
    runs = [enrich_run(r) for r in read_tsv(runs_path, RUN_COLUMNS)]
    idle = read_tsv(idle_path, IDLE_COLUMNS)
    load = summarize_load(runs, proxies)
    idle_summary = summarize_idle(idle, proxies)
    dur = meta["duration_s"]

    md = []
    md.append("## Portico vs " + ", ".join(NAMES[p] for p in proxies if p != "portico") + " (bench/run.sh)")
    md.append("")
    if meta["quick"] == "1":
        md.append("**QUICK=1 smoke run**: short runs and warm-ups; the figures only show that every scenario works.")
        md.append("")
    md.append(f"- date: {meta['date']}")
    md.append(f"- host: nproc={meta['nproc']}, CPU: {meta['cpu_model'] or 'unknown'}, kernel {meta['kernel']}")
    versions = [meta["nginx"], meta["haproxy"], "dotnet " + meta["dotnet"], meta["portico"]]
    if meta["yarp"]:
        versions.append(meta["yarp"])
    versions += [meta["wrk"]] + ([meta["h2load"]] if meta["h2load"] else [])
    md.append("- versions: " + "; ".join(versions))
    md.append(f"- pinning: {meta['pinning']}")
    extras = [k for k in ("h2c", "bodies") if k in meta["scenarios"].split()]
    extra = lambda kind: " (" + ", ".join(f"+ {meta[f'warmup_{kind}_extra_s']} s {k}" for k in extras) + ")" if extras else ""
    dotnet = " and ".join(NAMES[p] for p in proxies if p in ("portico", "yarp"))
    native = " and ".join(NAMES[p] for p in proxies if p in ("nginx", "haproxy"))
    warm = [f"{who} {meta[f'warmup_{k}_s']} s{extra(k)}" for k, who in (("dotnet", dotnet), ("native", native)) if who]
    md.append(f"- runs: {dur} s each; warm-up: {', '.join(warm)}; rounds: {meta['repeat']} (medians shown), proxy "
              "order rotated per round and case; proxies not under test paused (SIGSTOP)")
    if meta["yarp_skipped"]:
        md.append(f"- **YARP skipped**: {meta['yarp_skipped']}")
    if meta["upstream_counted"] != "1":
        md.append("- upstream connections not counted (the origin's stub_status did not answer)")
    md.append("")
    md.append("\"Portico ÷\" columns: Portico's figure divided by the row's (req/s, MiB/s, req per CPU-s: above 1 = "
              "Portico better; p99, RSS: below 1 = Portico better). \"paired\": Portico's req per CPU-s over the row's "
              "in the same round, geometric mean over rounds (less sensitive to drift between rounds than the ratio "
              "of medians).")

    def load_rows(scenario, cols):
        return [cols(s) for s in load if s["scenario"] == scenario]

    common_tail = lambda s: [
        num(s["req_per_cpu_s"]), num(s["proxy_cpu_pct"]), num(s["upstream_conns_per_1k_req"], "{:.2f}"),
        num(s["upstream_reuse_pct"], "{:.2f}"),
    ]
    if any(s["scenario"] == "conns" for s in load):
        md += ["", "### Requests/s by connection count (wrk -t1, 100-byte response, HTTP/1.1 keep-alive)", ""]
        md.append(table(
            [("proxy", "l"), ("conns", "r"), ("req/s", "r"), ("p50 ms", "r"), ("p99 ms", "r"), ("req per CPU-s", "r"),
             ("proxy CPU %", "r"), ("upstream conns / 1k req", "r"), ("reuse %", "r"), ("Portico ÷ req/s", "r"),
             ("Portico ÷ p99", "r"), ("Portico ÷ req per CPU-s", "r"), ("paired", "r")],
            load_rows("conns", lambda s: [NAMES[s["proxy"]], str(s["connections"]), num(s["rps"]), num(s["p50_ms"], "{:.2f}"),
                                          num(s["p99_ms"], "{:.2f}")] + common_tail(s)
                      + [rat(s, "rps"), rat(s, "p99_ms"), rat(s, "req_per_cpu_s"), rat(s, "req_per_cpu_s_paired")])))
    if any(s["scenario"] == "bodies" for s in load):
        md += ["", "### Response bodies (wrk -t1, origin serves a static file, HTTP/1.1 keep-alive)", ""]
        md.append(table(
            [("proxy", "l"), ("body", "r"), ("conns", "r"), ("req/s", "r"), ("MiB/s", "r"), ("p50 ms", "r"), ("p99 ms", "r"),
             ("req per CPU-s", "r"), ("proxy CPU %", "r"), ("upstream conns / 1k req", "r"), ("reuse %", "r"),
             ("MiB per CPU-s", "r"), ("Portico ÷ MiB/s", "r"), ("Portico ÷ p99", "r"), ("Portico ÷ req per CPU-s", "r"), ("paired", "r")],
            load_rows("bodies", lambda s: [NAMES[s["proxy"]], s["case"], str(s["connections"]), num(s["rps"]),
                                           num(s["mib_s"], "{:,.1f}"), num(s["p50_ms"], "{:.2f}"), num(s["p99_ms"], "{:.2f}")]
                      + common_tail(s) + [num(s["mib_per_cpu_s"], "{:,.0f}"), rat(s, "mib_s"), rat(s, "p99_ms"),
                                          rat(s, "req_per_cpu_s"), rat(s, "req_per_cpu_s_paired")])))
    if any(s["scenario"] == "h2c" for s in load):
        md += ["", "### h2c (h2load -t1, HTTP/2 prior knowledge, 100-byte response; HTTP/1.1 to the origin)", ""]
        md.append(table(
            [("proxy", "l"), ("conns × streams", "r"), ("req/s", "r"), ("p50 ms", "r"), ("p99 ms", "r"),
             ("req per CPU-s", "r"), ("proxy CPU %", "r"), ("upstream conns / 1k req", "r"), ("reuse %", "r"),
             ("Portico ÷ req/s", "r"), ("Portico ÷ p99", "r"), ("Portico ÷ req per CPU-s", "r"), ("paired", "r")],
            load_rows("h2c", lambda s: [NAMES[s["proxy"]], f"{s['connections']} × {s['streams']}", num(s["rps"]),
                                        num(s["p50_ms"], "{:.2f}"), num(s["p99_ms"], "{:.2f}")] + common_tail(s)
                      + [rat(s, "rps"), rat(s, "p99_ms"), rat(s, "req_per_cpu_s"), rat(s, "req_per_cpu_s_paired")])))
    if idle_summary:
        n = idle_summary[0]["connections"]
        md += ["", f"### Memory with {n:,} idle keep-alive connections (fresh process, one request on each)", ""]
        md.append(table(
            [("proxy", "l"), ("idle conns", "r"), ("still open", "r"), ("RSS fresh MiB", "r"), ("RSS with MiB", "r"),
             ("KiB per idle conn", "r"), ("peak RSS MiB", "r"), ("upstream conns", "r"), ("Portico ÷ RSS with", "r"),
             ("Portico ÷ KiB per conn", "r")],
            [[NAMES[s["proxy"]], num(s["ok"]), num(s["still_open"]), num(s["rss_before_mib"], "{:,.1f}"),
              num(s["rss_with_mib"], "{:,.1f}"), num(s["kib_per_idle_conn"], "{:.2f}"), num(s["rss_peak_mib"], "{:,.1f}"),
              num(s["upstream_new_conns"]), rat(s, "rss_with_mib"), rat(s, "kib_per_idle_conn")] for s in idle_summary]))

    warnings = []
    for s in load:
        if s["socket_errors"] or s["non_2xx"]:
            warnings.append(f"warning: {NAMES[s['proxy']]} {s['scenario']} {s['case']}: {s['socket_errors']} socket errors, "
                            f"{s['non_2xx']} non-2xx responses over {s['rounds']} round(s)")
    for s in idle_summary:
        if s["failed"] or (s["still_open"] is not None and s["still_open"] < s["ok"]):
            warnings.append(f"warning: {NAMES[s['proxy']]} idle: {s['failed']} connections failed, "
                            f"{s['still_open']} of {s['ok']} still open at the end")
    if warnings:
        md += [""] + warnings
    md += ["",
           "proxy CPU % = proxy CPU time / run time (100 = the proxy saturated its core). Where the fast proxies stay",
           "well under 100 %, the load core (load generator + origin) was the limit; compare 'req per CPU-s' then."]
    print("\n".join(md))

    def num_or_none(key):
        v = meta.get(key, "")
        return int(v) if v.isdigit() else None

    result = {
        "date": meta["date"],
        "quick": meta["quick"] == "1",
        "host": {"nproc": int(meta["nproc"]), "cpu_model": meta["cpu_model"], "kernel": meta["kernel"],
                 "pinning": meta["pinning"], "proxy_cpu": num_or_none("proxy_cpu"), "load_cpu": num_or_none("load_cpu"),
                 "open_files": int(meta["open_files"])},
        "versions": {k: meta[k] for k in ("nginx", "haproxy", "dotnet", "portico", "yarp", "wrk", "h2load", "python")},
        "settings": {
            "proxies": proxies, "yarp_skipped": meta["yarp_skipped"] or None, "scenarios": meta["scenarios"].split(),
            "duration_s": int(dur), "warmup_portico_s": int(meta["warmup_dotnet_s"]),
            "warmup_others_s": int(meta["warmup_native_s"]),
            "warmup_extra_portico_s": int(meta["warmup_dotnet_extra_s"]),
            "warmup_extra_others_s": int(meta["warmup_native_extra_s"]),
            "connections": [int(c) for c in meta["connections"].split()], "repeat": int(meta["repeat"]),
            "wrk_threads": 1, "origin_body_bytes": int(meta["origin_body_bytes"]),
            "bodies": meta["bodies"].split(), "body_connections": int(meta["body_connections"]),
            "h2_connections": int(meta["h2_connections"]), "h2_streams": int(meta["h2_streams"]),
            "idle_connections": int(meta["idle_connections"]), "idle_settle_s": int(meta["idle_settle_s"]),
            "settle_s": int(meta["settle_s"]), "upstream_counted": meta["upstream_counted"] == "1",
        },
        "summary": load,
        "runs": runs,
        "idle": {"summary": idle_summary, "runs": idle},
    }
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
