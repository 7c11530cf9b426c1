#!/usr/bin/env bash
# bench/run.sh: side-by-side load benchmark of Portico, nginx and HAProxy in front of the SAME origin
# (an nginx instance answering a fixed 100-byte body), measured with wrk. See bench/README.md.
#
#   bash bench/run.sh                                   # defaults: WARMUP 30 s Portico / 5 s others,
#                                                       # DURATION=15, CONNECTIONS="64 256", REPEAT=1
#   WARMUP=10 DURATION=5 CONNECTIONS="64" bash bench/run.sh   # quick check
#
# Everything listens on 127.0.0.1 only; every process the script starts is stopped on exit (also on Ctrl-C
# and on the overall time limit, BENCH_TIMEOUT).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-"64 256"}
REPEAT=${REPEAT:-1}
WARMUP_PORTICO=${WARMUP:-30}
WARMUP_OTHERS=${WARMUP:-5}
PORTICO_BIN=${PORTICO_BIN:-}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
SETTLE=${SETTLE:-1}          # seconds between resuming a proxy and loading it
KEEP_TMP=${KEEP_TMP:-0}      # 1 = keep the temp dir (configs, logs, raw wrk output)

PROXIES=(nginx haproxy portico)
BODY=0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789

log() { printf '%s\n' "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_uint "$DURATION" && ((DURATION > 0)) || die "DURATION must be a positive integer (seconds), got '$DURATION'"
is_uint "$REPEAT" && ((REPEAT > 0)) || die "REPEAT must be a positive integer, got '$REPEAT'"
is_uint "$WARMUP_PORTICO" || die "WARMUP must be a non-negative integer (seconds), got '$WARMUP_PORTICO'"
read -r -a CONNS <<<"$CONNECTIONS"
((${#CONNS[@]} > 0)) || die "CONNECTIONS is empty"
MAX_CONNS=0
for c in "${CONNS[@]}"; do
    is_uint "$c" && ((c > 0 && c <= 10000)) || die "CONNECTIONS: '$c' is not a connection count (1..10000)"
    ((c > MAX_CONNS)) && MAX_CONNS=$c
done

# ---------------------------------------------------------------------------------------------- processes
PIDS=()       # background processes started by this script (servers, watchdog)
TMP=""

tree_pids() { # a pid and all its descendants (nginx master -> worker), depth first
    local p=$1 c
    [[ -d /proc/$p ]] || return 0
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null || true); do tree_pids "$c"; done
}

signal_tree() { # signal_tree SIG pid
    local p
    for p in $(tree_pids "$2"); do kill -s "$1" "$p" 2>/dev/null || true; done
}

cleanup() {
    local rc=$? all=() p i
    trap - EXIT INT TERM HUP
    for p in "${PIDS[@]}"; do
        mapfile -t -O "${#all[@]}" all < <(tree_pids "$p")
    done
    if ((${#all[@]} > 0)); then
        for p in "${all[@]}"; do kill -CONT "$p" 2>/dev/null || true; done   # stopped processes ignore TERM
        for p in "${all[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for i in $(seq 1 50); do
            local alive=0
            for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.1
        done
        for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# ---------------------------------------------------------------------------------------------- tools
need=()
for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || need+=("$tool")
done
if ((${#need[@]} > 0)); then
    ((EUID == 0)) || die "missing ${need[*]}; run as root (the script installs them with apt-get) or install them"
    command -v apt-get >/dev/null || die "missing ${need[*]} and apt-get is not available"
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y "${need[@]}" >&2 ||
        { timeout 300 apt-get update >&2 && timeout 600 apt-get install -y "${need[@]}" >&2; } ||
        die "apt-get install ${need[*]} failed"
fi
export PATH="$PATH:/usr/sbin:/sbin"
for tool in nginx haproxy wrk curl taskset timeout pgrep awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

# ---------------------------------------------------------------------------------------------- CPU pinning
expand_cpu_list() { # "0-1,4" -> "0 1 4"
    local part out=()
    IFS=',' read -r -a parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then out+=($(seq "${part%-*}" "${part#*-}")); else out+=("$part"); fi
    done
    echo "${out[@]}"
}
read -r -a ALLOWED_CPUS <<<"$(expand_cpu_list "$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)")"
NPROC=$(nproc)
if ((${#ALLOWED_CPUS[@]} >= 2)); then
    PROXY_CPU=${PROXY_CPU:-${ALLOWED_CPUS[0]}}
    LOAD_CPU=${LOAD_CPU:-${ALLOWED_CPUS[1]}}
    PIN_PROXY=(taskset -c "$PROXY_CPU")
    PIN_LOAD=(taskset -c "$LOAD_CPU")
    PINNING="proxy under test pinned to CPU $PROXY_CPU (taskset -c $PROXY_CPU); origin and wrk pinned to CPU $LOAD_CPU"
else
    PROXY_CPU="" LOAD_CPU=""
    PIN_PROXY=() PIN_LOAD=()
    PINNING="NOT pinned: only one CPU visible, proxy, origin and wrk share it (numbers are indicative only)"
fi

# ---------------------------------------------------------------------------------------------- time limit
ncases=$((REPEAT * ${#CONNS[@]} * ${#PROXIES[@]}))
publish_budget=0
[[ -z $PORTICO_BIN ]] && publish_budget=900
BENCH_TIMEOUT=${BENCH_TIMEOUT:-$((publish_budget + 120 + WARMUP_PORTICO + 2 * WARMUP_OTHERS + 3 * (SETTLE + 10) + ncases * (DURATION + SETTLE + 10)))}
is_uint "$BENCH_TIMEOUT" || die "BENCH_TIMEOUT must be an integer (seconds)"
(sleep "$BENCH_TIMEOUT" && echo "bench: time limit BENCH_TIMEOUT=${BENCH_TIMEOUT}s reached, stopping" >&2 &&
    kill -TERM $$) &
PIDS+=($!)

# ---------------------------------------------------------------------------------------------- Portico binary
if [[ -z $PORTICO_BIN ]]; then
    command -v dotnet >/dev/null || die "dotnet not found (set PORTICO_BIN to a published portico binary)"
    log "publishing Portico (Release) to bench/out/portico"
    mkdir -p "$BENCH_DIR/out"
    if ! (cd "$REPO_DIR" && timeout 900 dotnet publish src/Portico.Cli -c Release -o bench/out/portico \
        >"$BENCH_DIR/out/publish.log" 2>&1); then
        tail -n 30 "$BENCH_DIR/out/publish.log" >&2
        die "dotnet publish failed (full log: bench/out/publish.log)"
    fi
    PORTICO_BIN=$BENCH_DIR/out/portico/portico
fi
[[ -x $PORTICO_BIN ]] || die "PORTICO_BIN=$PORTICO_BIN is not an executable"
PORTICO_BIN=$(cd "$(dirname "$PORTICO_BIN")" && pwd)/$(basename "$PORTICO_BIN")

# ---------------------------------------------------------------------------------------------- ports + configs
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-bench.XXXXXX")
mkdir -p "$TMP/wrk"

USED_PORTS=()
PORT=0
pick_port() { # sets PORT to a free 127.0.0.1 port not handed out before
    local p i
    for i in $(seq 1 500); do
        p=$((20000 + RANDOM % 30000))
        [[ " ${USED_PORTS[*]} " == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+=("$p")
            PORT=$p
            return 0
        fi
    done
    die "no free port found"
}
pick_port; ORIGIN_PORT=$PORT
declare -A PORT_OF PID_OF
for p in "${PROXIES[@]}"; do pick_port; PORT_OF[$p]=$PORT; done

nginx_user_line=""
if ((EUID == 0)) && id nobody >/dev/null 2>&1; then
    nginx_user_line="user nobody $(id -gn nobody);"
fi

nginx_common() { # $1 = name; paths that nginx would otherwise put under /var
    cat <<EOF
$nginx_user_line
daemon off;
master_process on;
worker_processes 1;
pid $TMP/$1.pid;
error_log $TMP/$1-error.log warn;
events { worker_connections 8192; }
EOF
}
nginx_http_common() {
    cat <<EOF
    access_log off;
    client_body_temp_path $TMP/$1-temp/body;
    proxy_temp_path $TMP/$1-temp/proxy;
    fastcgi_temp_path $TMP/$1-temp/fastcgi;
    uwsgi_temp_path $TMP/$1-temp/uwsgi;
    scgi_temp_path $TMP/$1-temp/scgi;
EOF
}

mkdir -p "$TMP/origin-temp" "$TMP/nginx-temp"
chmod 755 "$TMP"

{
    nginx_common origin
    cat <<EOF
http {
$(nginx_http_common origin)
    keepalive_timeout 3600s;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / {
            default_type text/plain;
            return 200 "$BODY";
        }
    }
}
EOF
} >"$TMP/origin.conf"

{
    nginx_common nginx
    cat <<EOF
http {
$(nginx_http_common nginx)
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 3600s;
    }
    server {
        listen 127.0.0.1:${PORT_OF[nginx]};
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/nginx.conf"

cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 8192

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 10s
    http-reuse always

frontend bench
    bind 127.0.0.1:${PORT_OF[haproxy]}
    default_backend origin

backend origin
    server origin1 127.0.0.1:$ORIGIN_PORT
EOF

cat >"$TMP/portico.yaml" <<EOF
# One upstream and no routes: every request goes to it. Admin listener off, logging at warn (no access log).
server:
  bind_address: "127.0.0.1:${PORT_OF[portico]}"
upstreams:
  origin:
    servers:
      - "127.0.0.1:$ORIGIN_PORT"
admin:
  enabled: false
logging:
  level: "warn"
EOF

nginx -t -q -c "$TMP/origin.conf" -e "$TMP/origin-error.log" 2>"$TMP/origin-check.log" ||
    { cat "$TMP/origin-check.log" >&2; die "origin nginx config invalid"; }
nginx -t -q -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" 2>"$TMP/nginx-check.log" ||
    { cat "$TMP/nginx-check.log" >&2; die "nginx proxy config invalid"; }
haproxy -c -q -f "$TMP/haproxy.cfg" >"$TMP/haproxy-check.log" 2>&1 ||
    { cat "$TMP/haproxy-check.log" >&2; die "haproxy config invalid"; }
"$PORTICO_BIN" validate "$TMP/portico.yaml" >"$TMP/portico-check.log" 2>&1 ||
    { cat "$TMP/portico-check.log" >&2; die "portico config invalid"; }

# ---------------------------------------------------------------------------------------------- start
wait_ready() { # wait_ready name port pid logfile
    local i out
    for i in $(seq 1 150); do
        kill -0 "$3" 2>/dev/null || { tail -n 30 "$4" >&2 || true; die "$1 exited during startup"; }
        out=$(curl -s --max-time 2 "http://127.0.0.1:$2/" 2>/dev/null || true)
        if [[ $out == "$BODY" ]]; then return 0; fi
        sleep 0.2
    done
    tail -n 30 "$4" >&2 || true
    die "$1 on 127.0.0.1:$2 did not answer the 100-byte body within 30 s (last answer: ${out:0:200})"
}

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

log "origin: nginx on 127.0.0.1:$ORIGIN_PORT; temp dir $TMP"
"${PIN_LOAD[@]}" nginx -c "$TMP/origin.conf" -e "$TMP/origin-error.log" >"$TMP/origin.out" 2>&1 &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_ready origin "$ORIGIN_PORT" "$ORIGIN_PID" "$TMP/origin-error.log"

"${PIN_PROXY[@]}" nginx -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" >"$TMP/nginx.out" 2>&1 &
PID_OF[nginx]=$!
PIDS+=("${PID_OF[nginx]}")
"${PIN_PROXY[@]}" haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.out" 2>&1 &
PID_OF[haproxy]=$!
PIDS+=("${PID_OF[haproxy]}")
(cd "$TMP" && exec env -u PORTICO_LOG "${PIN_PROXY[@]}" "$PORTICO_BIN" "$TMP/portico.yaml" >"$TMP/portico.out" 2>&1) &
PID_OF[portico]=$!
PIDS+=("${PID_OF[portico]}")

wait_ready nginx "${PORT_OF[nginx]}" "${PID_OF[nginx]}" "$TMP/nginx-error.log"
wait_ready haproxy "${PORT_OF[haproxy]}" "${PID_OF[haproxy]}" "$TMP/haproxy.out"
wait_ready portico "${PORT_OF[portico]}" "${PID_OF[portico]}" "$TMP/portico.out"
for p in "${PROXIES[@]}"; do log "$p: 127.0.0.1:${PORT_OF[$p]} (pid ${PID_OF[$p]})"; done

# ---------------------------------------------------------------------------------------------- measuring
CLK_TCK=$(getconf CLK_TCK)

cpu_ticks() { # utime+stime of a pid and its descendants, in clock ticks
    local total=0 p s f
    for p in $(tree_pids "$1"); do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }             # drop "pid (comm) "; comm may contain spaces
        read -r -a f <<<"$s"    # f[0] = field 3 (state) ... f[11] = utime (14), f[12] = stime (15)
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

pause_others() { local p; for p in "${PROXIES[@]}"; do [[ $p == "$1" ]] || signal_tree STOP "${PID_OF[$p]}"; done; }
resume_others() { local p; for p in "${PROXIES[@]}"; do [[ $p == "$1" ]] || signal_tree CONT "${PID_OF[$p]}"; done; }

run_wrk() { # run_wrk port connections seconds outfile
    timeout --foreground -k 5 $(($3 + 30)) "${PIN_LOAD[@]}" \
        wrk -t1 -c"$2" -d"$3"s --latency --timeout 10s "http://127.0.0.1:$1/" >"$4" 2>&1
}

# prints: rps p50_ms p75_ms p90_ms p99_ms requests socket_errors non2xx
parse_wrk() {
    awk '
    function ms(v) {
        if (v ~ /us$/) return v / 1000
        if (v ~ /ms$/) return v + 0
        if (v ~ /m$/)  return v * 60000
        if (v ~ /s$/)  return v * 1000
        return v + 0
    }
    /^[ \t]+50%/ { p50 = ms($2) }
    /^[ \t]+75%/ { p75 = ms($2) }
    /^[ \t]+90%/ { p90 = ms($2) }
    /^[ \t]+99%/ { p99 = ms($2) }
    / requests in / { req = $1 }
    /Socket errors:/ { gsub(/,/, ""); err = $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /^Requests\/sec:/ { rps = $2 }
    END {
        if (rps == "") exit 1
        printf "%s %.3f %.3f %.3f %.3f %d %d %d\n", rps, p50, p75, p90, p99, req, err + 0, non2xx + 0
    }' "$1"
}

warmup_of() { if [[ $1 == portico ]]; then echo "$WARMUP_PORTICO"; else echo "$WARMUP_OTHERS"; fi; }

for p in "${PROXIES[@]}"; do
    w=$(warmup_of "$p")
    ((w > 0)) || continue
    log "warm-up: $p, ${w} s at $MAX_CONNS connections"
    pause_others "$p"
    run_wrk "${PORT_OF[$p]}" "$MAX_CONNS" "$w" "$TMP/wrk/warmup-$p.txt" || log "warning: warm-up run of $p failed (see KEEP_TMP=1)"
    resume_others "$p"
done

RUNS=$TMP/runs.tsv
: >"$RUNS"
for ((round = 1; round <= REPEAT; round++)); do
    for c in "${CONNS[@]}"; do
        # interleave: rotate the proxy order every round so no proxy always goes first
        for ((k = 0; k < ${#PROXIES[@]}; k++)); do
            p=${PROXIES[$(((k + round - 1) % ${#PROXIES[@]}))]}
            out="$TMP/wrk/r$round-c$c-$p.txt"
            pause_others "$p"
            sleep "$SETTLE"
            t0=$(cpu_ticks "${PID_OF[$p]}")
            o0=$(cpu_ticks "$ORIGIN_PID")
            rc=0
            run_wrk "${PORT_OF[$p]}" "$c" "$DURATION" "$out" || rc=$?
            t1=$(cpu_ticks "${PID_OF[$p]}")
            o1=$(cpu_ticks "$ORIGIN_PID")
            resume_others "$p"
            if ! kill -0 "${PID_OF[$p]}" 2>/dev/null; then die "$p died during the run"; fi
            if ((rc != 0)) || ! m=$(parse_wrk "$out"); then
                cat "$out" >&2 || true
                die "wrk against $p (c=$c) failed (exit $rc)"
            fi
            read -r rps p50 p75 p90 p99 req err non2xx <<<"$m"
            cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
            ocpu=$(awk -v a="$o0" -v b="$o1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
                "$round" "$p" "$c" "$rps" "$p50" "$p75" "$p90" "$p99" "$req" "$err" "$non2xx" "$cpu" "$ocpu" >>"$RUNS"
            log "round $round/$REPEAT c=$c $p: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, proxy CPU ${cpu} s, errors $err, non-2xx $non2xx"
        done
    done
done

# ---------------------------------------------------------------------------------------------- report
json_str() { # JSON string literal
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/ }
    s=${s//$'\n'/ }
    s=${s//$'\r'/}
    printf '"%s"' "$s"
}

DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP=$(date -u +%Y%m%d-%H%M%S)
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
[[ -n $CPU_MODEL ]] || CPU_MODEL=$(lscpu 2>/dev/null | awk -F': *' '/Model name/ {print $2; exit}' || true)
first_line() { "$@" 2>&1 | head -n1 || true; }   # version commands may exit non-zero (wrk -v does)
NGINX_VERSION=$(first_line nginx -v)
HAPROXY_VERSION=$(first_line haproxy -v)
DOTNET_VERSION=$(dotnet --version 2>/dev/null || echo "n/a")
PORTICO_VERSION=$("$PORTICO_BIN" version 2>/dev/null | head -n1 || true)
[[ -n $PORTICO_VERSION ]] || PORTICO_VERSION="n/a"
WRK_VERSION=$(first_line wrk -v | awk '{print $1, $2}')
KERNEL=$(uname -r)

# one aggregated row per proxy and connection count: the median over rounds
# columns: proxy conns rps p50 p99 rps_per_cpu cpu_util_pct errors non2xx rounds rps_min rps_max
SUMMARY=$TMP/summary.tsv
awk -F'\t' -v dur="$DURATION" -v order="${PROXIES[*]} " -v conns="${CONNS[*]}" '
function median(s,    a, n, i, j, t) {
    n = split(s, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    k = $2 SUBSEP $3
    rps[k] = rps[k] " " $4; p50[k] = p50[k] " " $5; p99[k] = p99[k] " " $8
    cpus = $12 + 0
    rpc[k] = rpc[k] " " (cpus > 0 ? $9 / cpus : 0)
    util[k] = util[k] " " (100 * cpus / dur)
    err[k] += $10; non[k] += $11; n[k]++
    if (!(k in mn) || $4 + 0 < mn[k]) mn[k] = $4 + 0
    if (!(k in mx) || $4 + 0 > mx[k]) mx[k] = $4 + 0
}
END {
    np = split(order, P, " "); nc = split(conns, C, " ")
    for (ci = 1; ci <= nc; ci++) for (pi = 1; pi <= np; pi++) {
        k = P[pi] SUBSEP C[ci]
        if (!(k in n)) continue
        printf "%s\t%s\t%.1f\t%.3f\t%.3f\t%.0f\t%.0f\t%d\t%d\t%d\t%.1f\t%.1f\n", P[pi], C[ci], median(rps[k]), median(p50[k]),
            median(p99[k]), median(rpc[k]), median(util[k]), err[k], non[k], n[k], mn[k], mx[k]
    }
}' "$RUNS" >"$SUMMARY"

# markdown to stdout
{
    echo "## Portico vs nginx vs HAProxy (wrk, 100-byte origin response, HTTP/1.1 keep-alive)"
    echo
    echo "- date: $DATE"
    echo "- host: nproc=$NPROC, CPU: ${CPU_MODEL:-unknown}, kernel $KERNEL"
    echo "- versions: $NGINX_VERSION; $HAPROXY_VERSION; dotnet $DOTNET_VERSION; $PORTICO_VERSION; $WRK_VERSION"
    echo "- pinning: $PINNING"
    echo "- load: wrk -t1 -c<C> -d${DURATION}s --latency; warm-up ${WARMUP_PORTICO}s Portico / ${WARMUP_OTHERS}s nginx, HAProxy; rounds: $REPEAT (median shown); proxies not under test paused (SIGSTOP)"
    echo
    awk -F'\t' '
    { k = $2; if ($1 == "nginx") ng[k] = $3; if ($1 == "haproxy") hp[k] = $3; row[NR] = $0 }
    END {
        print "| proxy | connections | req/s | p50 (ms) | p99 (ms) | req per CPU-s | proxy CPU % | ratio vs nginx | ratio vs haproxy |"
        print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        for (i = 1; i <= NR; i++) {
            split(row[i], f, "\t")
            rn = (ng[f[2]] > 0) ? sprintf("%.2f", f[3] / ng[f[2]]) : "n/a"
            rh = (hp[f[2]] > 0) ? sprintf("%.2f", f[3] / hp[f[2]]) : "n/a"
            printf "| %s | %s | %.0f | %.2f | %.2f | %.0f | %s | %s | %s |\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], rn, rh
        }
    }' "$SUMMARY"
    echo
    echo "Portico ratios (Portico / other; req/s and req per CPU-s: higher is better for Portico, p99: lower is better):"
    echo
    awk -F'\t' '
    { k = $2; conns[k] = 1; order[++n] = k; rps[$1, k] = $3; p99[$1, k] = $5; rpc[$1, k] = $6 }
    function r(a, b) { return (b > 0) ? sprintf("%.2f", a / b) : "n/a" }
    END {
        for (i = 1; i <= n; i++) {
            k = order[i]; if (done[k]++) continue
            printf "- c=%s: req/s %s vs nginx, %s vs HAProxy; p99 %s vs nginx, %s vs HAProxy; req per CPU-s %s vs nginx, %s vs HAProxy\n", k,
                r(rps["portico", k], rps["nginx", k]), r(rps["portico", k], rps["haproxy", k]),
                r(p99["portico", k], p99["nginx", k]), r(p99["portico", k], p99["haproxy", k]),
                r(rpc["portico", k], rpc["nginx", k]), r(rpc["portico", k], rpc["haproxy", k])
        }
    }' "$SUMMARY"
    awk -F'\t' '$8 + $9 > 0 { printf "\nwarning: %s at c=%s had %d socket errors and %d non-2xx responses over %d round(s)\n", $1, $2, $8, $9, $10 }' "$SUMMARY"
    echo
    echo "proxy CPU % = proxy CPU time / run time (100 = the proxy saturated its core). If nginx and HAProxy stay"
    echo "well under 100 %, wrk + origin (sharing one core) were the bottleneck and 'req per CPU-s' is the fairer figure."
}

# JSON
mkdir -p "$RESULTS_DIR"
JSON_TMP="$RESULTS_DIR/latest.json.tmp"
{
    printf '{\n'
    printf '  "date": %s,\n' "$(json_str "$DATE")"
    printf '  "host": {"nproc": %d, "cpu_model": %s, "kernel": %s, "pinning": %s, "proxy_cpu": %s, "load_cpu": %s},\n' \
        "$NPROC" "$(json_str "$CPU_MODEL")" "$(json_str "$KERNEL")" "$(json_str "$PINNING")" \
        "${PROXY_CPU:-null}" "${LOAD_CPU:-null}"
    printf '  "versions": {"nginx": %s, "haproxy": %s, "dotnet": %s, "portico": %s, "wrk": %s},\n' \
        "$(json_str "$NGINX_VERSION")" "$(json_str "$HAPROXY_VERSION")" "$(json_str "$DOTNET_VERSION")" \
        "$(json_str "$PORTICO_VERSION")" "$(json_str "$WRK_VERSION")"
    printf '  "settings": {"duration_s": %d, "warmup_portico_s": %d, "warmup_others_s": %d, "connections": [%s], "repeat": %d, "wrk_threads": 1, "origin_body_bytes": %d},\n' \
        "$DURATION" "$WARMUP_PORTICO" "$WARMUP_OTHERS" "$(IFS=,; echo "${CONNS[*]}")" "$REPEAT" "${#BODY}"
    printf '  "summary": [\n'
    awk -F'\t' '
    { k = $2; if ($1 == "nginx") ng[k] = $3; if ($1 == "haproxy") hp[k] = $3; row[NR] = $0 }
    function r(a, b) { return (b > 0) ? sprintf("%.3f", a / b) : "null" }
    END {
        for (i = 1; i <= NR; i++) {
            split(row[i], f, "\t")
            printf "    {\"proxy\": \"%s\", \"connections\": %d, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"req_per_cpu_s\": %.0f, \"proxy_cpu_pct\": %.0f, \"ratio_vs_nginx\": %s, \"ratio_vs_haproxy\": %s, \"socket_errors\": %d, \"non_2xx\": %d, \"rounds\": %d, \"rps_min\": %.1f, \"rps_max\": %.1f}%s\n",
                f[1], f[2], f[3], f[4], f[5], f[6], f[7], r(f[3], ng[f[2]]), r(f[3], hp[f[2]]), f[8], f[9], f[10], f[11], f[12], (i < NR ? "," : "")
        }
    }' "$SUMMARY"
    printf '  ],\n'
    printf '  "runs": [\n'
    awk -F'\t' -v dur="$DURATION" '
    { row[NR] = $0 }
    END {
        for (i = 1; i <= NR; i++) {
            split(row[i], f, "\t")
            printf "    {\"round\": %d, \"proxy\": \"%s\", \"connections\": %d, \"rps\": %s, \"p50_ms\": %s, \"p75_ms\": %s, \"p90_ms\": %s, \"p99_ms\": %s, \"requests\": %d, \"socket_errors\": %d, \"non_2xx\": %d, \"proxy_cpu_s\": %s, \"req_per_cpu_s\": %.0f, \"origin_cpu_s\": %s}%s\n",
                f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12], (f[12] > 0 ? f[9] / f[12] : 0), f[13], (i < NR ? "," : "")
        }
    }' "$RUNS"
    printf '  ]\n'
    printf '}\n'
} >"$JSON_TMP"
cp "$JSON_TMP" "$RESULTS_DIR/$STAMP.json"
mv "$JSON_TMP" "$RESULTS_DIR/latest.json"
log "results: ${RESULTS_DIR#"$REPO_DIR"/}/latest.json and ${RESULTS_DIR#"$REPO_DIR"/}/$STAMP.json"
