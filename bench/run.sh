#!/usr/bin/env bash
# bench/run.sh: side-by-side load benchmark of Portico, nginx, HAProxy and YARP in front of the SAME origin (an
# nginx instance serving a fixed 100-byte body and 64 KiB / 1 MiB files). See bench/README.md.
#
#   bash bench/run.sh              # everything: c64/c256/c1000, bodies, h2c, 10k idle connections (~12 min)
#   QUICK=1 bash bench/run.sh      # smoke run of every scenario, short runs (~4 min plus the publish)
#   SCENARIOS="conns" CONNECTIONS="64" bash bench/run.sh     # one scenario, one connection count
#   REPEAT=3 bash bench/run.sh     # 3 interleaved rounds, medians reported
#
# Everything listens on 127.0.0.1 only; every process the script starts is stopped on exit (also on Ctrl-C
# and on the overall time limit, BENCH_TIMEOUT). It stops only processes it started, by pid.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=bench/haproxy-config.sh
. "$BENCH_DIR/haproxy-config.sh"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    # a smoke run: every scenario once, short runs; the numbers only show that everything works
    DURATION=${DURATION:-3}
    WARMUP_DOTNET=${WARMUP:-8}
    WARMUP_NATIVE=${WARMUP:-2}
    IDLE_SETTLE=${IDLE_SETTLE:-2}
    RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results/quick}
else
    DURATION=${DURATION:-15}
    WARMUP_DOTNET=${WARMUP:-30}   # the .NET JIT (tiering, PGO) needs about 30 s to reach steady state
    WARMUP_NATIVE=${WARMUP:-5}
    IDLE_SETTLE=${IDLE_SETTLE:-10}   # long enough for Portico's idle trim (done 6-9 s after the last request)
    RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
fi
PROXIES_ARG=${PROXIES:-"nginx haproxy portico yarp"}
SCENARIOS=${SCENARIOS:-"conns bodies h2c idle"}
CONNECTIONS=${CONNECTIONS:-"64 256 1000"}
BODIES=${BODIES:-"64k 1m"}
BODY_CONNECTIONS=${BODY_CONNECTIONS:-64}
H2_CONNECTIONS=${H2_CONNECTIONS:-64}
H2_STREAMS=${H2_STREAMS:-10}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
IDLE_CONCURRENCY=${IDLE_CONCURRENCY:-200}
REPEAT=${REPEAT:-1}
PORTICO_BIN=${PORTICO_BIN:-}
YARP_BIN=${YARP_BIN:-}
SETTLE=${SETTLE:-1}          # seconds between resuming a proxy and loading it
KEEP_TMP=${KEEP_TMP:-0}      # 1 = keep the temp dir (configs, logs, raw tool output)
PYTHON=${PYTHON:-/usr/bin/python3}

BODY=0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789

log() { printf '%s\n' "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
is_uint "$DURATION" && ((DURATION > 0)) || die "DURATION must be a positive integer (seconds), got '$DURATION'"
is_uint "$REPEAT" && ((REPEAT > 0)) || die "REPEAT must be a positive integer, got '$REPEAT'"
is_uint "$WARMUP_DOTNET" || die "WARMUP must be a non-negative integer (seconds), got '$WARMUP_DOTNET'"
is_uint "$SETTLE" || die "SETTLE must be a non-negative integer (seconds), got '$SETTLE'"
is_uint "$IDLE_SETTLE" || die "IDLE_SETTLE must be a non-negative integer (seconds), got '$IDLE_SETTLE'"
for v in BODY_CONNECTIONS H2_CONNECTIONS H2_STREAMS IDLE_CONNECTIONS IDLE_CONCURRENCY; do
    is_uint "${!v}" && ((${!v} > 0)) || die "$v must be a positive integer, got '${!v}'"
done

read -r -a PROXIES <<<"$PROXIES_ARG"
for p in "${PROXIES[@]}"; do
    [[ $p =~ ^(nginx|haproxy|portico|yarp)$ ]] || die "PROXIES: unknown proxy '$p' (nginx haproxy portico yarp)"
done
((${#PROXIES[@]} > 0)) || die "PROXIES is empty"
has_proxy() { [[ " ${PROXIES[*]} " == *" $1 "* ]]; }

read -r -a SCEN <<<"$SCENARIOS"
for s in "${SCEN[@]}"; do
    [[ $s =~ ^(conns|bodies|h2c|idle)$ ]] || die "SCENARIOS: unknown scenario '$s' (conns bodies h2c idle)"
done
((${#SCEN[@]} > 0)) || die "SCENARIOS is empty"
has_scenario() { [[ " ${SCEN[*]} " == *" $1 "* ]]; }

read -r -a CONNS <<<"$CONNECTIONS"
MAX_CONNS=0
for c in "${CONNS[@]}"; do
    is_uint "$c" && ((c > 0 && c <= 10000)) || die "CONNECTIONS: '$c' is not a connection count (1..10000)"
    ((c > MAX_CONNS)) && MAX_CONNS=$c
done
if has_scenario conns; then ((${#CONNS[@]} > 0)) || die "CONNECTIONS is empty"; fi
((MAX_CONNS > 0)) || MAX_CONNS=64

body_bytes() { # 64k -> 65536, 1m -> 1048576, 100 -> 100
    local v=${1,,}
    case $v in
        *k) is_uint "${v%k}" && echo $((${v%k} * 1024)) ;;
        *m) is_uint "${v%m}" && echo $((${v%m} * 1048576)) ;;
        *) is_uint "$v" && echo "$v" ;;
    esac
}
read -r -a BODY_SIZES <<<"$BODIES"
declare -A BODY_BYTES
for b in "${BODY_SIZES[@]}"; do
    n=$(body_bytes "$b") && ((n > 0 && n <= 64 * 1048576)) || die "BODIES: '$b' is not a size like 64k or 1m (up to 64m)"
    BODY_BYTES[$b]=$n
done
if has_scenario bodies; then ((${#BODY_SIZES[@]} > 0)) || die "BODIES is empty"; fi

# ---------------------------------------------------------------------------------------------- processes
PIDS=()       # background processes started by this script (servers, clients, watchdog)
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

forget_pid() { # drop a pid from PIDS once it is gone, so cleanup never signals a recycled pid
    local p keep=()
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

stop_tree() { # stop_tree pid: TERM the tree (CONT first: a stopped process ignores TERM), KILL after 5 s
    local all=() p i alive
    mapfile -t all < <(tree_pids "$1")
    if ((${#all[@]} > 0)); then
        for p in "${all[@]}"; do kill -CONT "$p" 2>/dev/null || true; done
        for p in "${all[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for i in $(seq 1 50); do
            alive=0
            for p in "${all[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            ((alive)) || break
            sleep 0.1
        done
        for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    fi
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
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
export PATH="$PATH:/usr/sbin:/sbin"
need=()
for tool in nginx haproxy wrk; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if has_scenario h2c; then command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client); fi
if ((${#need[@]} > 0)); then
    ((EUID == 0)) || die "missing ${need[*]}; run as root (the script installs them with apt-get) or install them"
    command -v apt-get >/dev/null || die "missing ${need[*]} and apt-get is not available"
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y "${need[@]}" >&2 ||
        { timeout 300 apt-get update >&2 && timeout 600 apt-get install -y "${need[@]}" >&2; } ||
        die "apt-get install ${need[*]} failed"
fi
for tool in nginx haproxy wrk curl taskset timeout pgrep awk sort; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if has_scenario h2c; then command -v h2load >/dev/null || die "h2load not found (Debian package nghttp2-client)"; fi
[[ -x $PYTHON ]] || die "$PYTHON not found (the report and the idle scenario's client need it; set PYTHON)"

# ---------------------------------------------------------------------------------------------- open files
# Raise the soft limit up to the hard limit, never beyond it. The idle scenario needs IDLE_CONNECTIONS fds in
# the client and as many again in the proxy (plus its upstream connections); they are separate processes, and
# each inherits this limit.
NOFILE_HARD=$(ulimit -Hn)
if [[ $NOFILE_HARD == unlimited ]]; then NOFILE_TARGET=65536; else NOFILE_TARGET=$NOFILE_HARD; fi
ulimit -Sn "$NOFILE_TARGET" 2>/dev/null || true
NOFILE=$(ulimit -Sn)
[[ $NOFILE == unlimited ]] && NOFILE=65536
if has_scenario idle && ((IDLE_CONNECTIONS + 1000 > NOFILE)); then
    die "open-files limit $NOFILE is too low for IDLE_CONNECTIONS=$IDLE_CONNECTIONS (need about $((IDLE_CONNECTIONS + 1000))); lower IDLE_CONNECTIONS or raise the hard limit"
fi
if has_scenario conns && ((MAX_CONNS + 1000 > NOFILE)); then
    die "open-files limit $NOFILE is too low for $MAX_CONNS connections"
fi
# nginx counts client and upstream connections against worker_connections
NGINX_WORKER_CONNECTIONS=$((NOFILE - 64))
((NGINX_WORKER_CONNECTIONS > 32768)) && NGINX_WORKER_CONNECTIONS=32768
# HAProxy sizes its fd need as 2 x maxconn and by default refuses to start when the limit is lower
# (strict-limits); idle client connections need one fd each, so the cap is set above IDLE_CONNECTIONS and
# strict-limits is off (HAProxy then logs an alert and runs).
HAPROXY_MAXCONN=$((IDLE_CONNECTIONS + 2048))
((HAPROXY_MAXCONN < MAX_CONNS + 2048)) && HAPROXY_MAXCONN=$((MAX_CONNS + 2048))

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
    PINNING="proxy under test pinned to CPU $PROXY_CPU (taskset -c $PROXY_CPU); origin and load generator pinned to CPU $LOAD_CPU"
else
    PROXY_CPU="" LOAD_CPU=""
    PIN_PROXY=() PIN_LOAD=()
    PINNING="NOT pinned: only one CPU visible, proxy, origin and load generator share it (numbers are indicative only)"
fi

# ---------------------------------------------------------------------------------------------- time limit
nload=0
has_scenario conns && nload=$((nload + ${#CONNS[@]}))
has_scenario bodies && nload=$((nload + ${#BODY_SIZES[@]}))
has_scenario h2c && nload=$((nload + 1))
nidle=0
has_scenario idle && nidle=1
extra_warmup() { # the h2c and body warm-ups: a third of the main warm-up, at least 2 s, at most the warm-up
    local e=$(($1 / 3))
    ((e < 2)) && e=2
    ((e > $1)) && e=$1
    echo "$e"
}
EXTRA_DOTNET=$(extra_warmup "$WARMUP_DOTNET")
EXTRA_NATIVE=$(extra_warmup "$WARMUP_NATIVE")
publish_budget=0
[[ -z $PORTICO_BIN ]] && publish_budget=$((publish_budget + 900))
[[ -z $YARP_BIN ]] && has_proxy yarp && publish_budget=$((publish_budget + 900))
np=${#PROXIES[@]}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-$((publish_budget + 180 + np * (WARMUP_DOTNET + 2 * EXTRA_DOTNET + 3 * SETTLE + 40) + \
    REPEAT * np * (nload * (DURATION + SETTLE + 15) + nidle * (IDLE_SETTLE + 240))))}
is_uint "$BENCH_TIMEOUT" || die "BENCH_TIMEOUT must be an integer (seconds)"
(sleep "$BENCH_TIMEOUT" && echo "bench: time limit BENCH_TIMEOUT=${BENCH_TIMEOUT}s reached, stopping" >&2 &&
    kill -TERM $$) &
PIDS+=($!)

# ---------------------------------------------------------------------------------------------- binaries
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

# YARP is a comparison peer built from bench/YarpProxy (never part of Portico.slnx). When it cannot be built,
# the run goes on without it and says so in the report.
YARP_SKIPPED=""
skip_yarp() {
    YARP_SKIPPED=$1
    log "YARP skipped: $1"
    local keep=() p
    for p in "${PROXIES[@]}"; do [[ $p == yarp ]] || keep+=("$p"); done
    PROXIES=("${keep[@]}")
}
if has_proxy yarp && [[ -z $YARP_BIN ]]; then
    if ! command -v dotnet >/dev/null; then
        skip_yarp "dotnet not found (set YARP_BIN to a published bench/YarpProxy)"
    else
        log "publishing bench/YarpProxy (Yarp.ReverseProxy 2.1.0, Release) to bench/out/yarp"
        mkdir -p "$BENCH_DIR/out"
        if (cd "$REPO_DIR" && timeout 900 dotnet publish bench/YarpProxy -c Release -o bench/out/yarp \
            >"$BENCH_DIR/out/publish-yarp.log" 2>&1); then
            YARP_BIN=$BENCH_DIR/out/yarp/yarp-proxy
        else
            tail -n 15 "$BENCH_DIR/out/publish-yarp.log" >&2
            skip_yarp "dotnet publish bench/YarpProxy failed (restore of Yarp.ReverseProxy 2.1.0? log: bench/out/publish-yarp.log)"
        fi
    fi
fi
if has_proxy yarp; then
    [[ -x $YARP_BIN ]] || die "YARP_BIN=$YARP_BIN is not an executable"
    YARP_BIN=$(cd "$(dirname "$YARP_BIN")" && pwd)/$(basename "$YARP_BIN")
fi
((${#PROXIES[@]} > 0)) || die "no proxy left to measure"

# ---------------------------------------------------------------------------------------------- ports + configs
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-bench.XXXXXX")
mkdir -p "$TMP/out" "$TMP/www/bodies"
chmod 755 "$TMP" "$TMP/www" "$TMP/www/bodies"

# Ports come from below the kernel's ephemeral range when there is room, so that client connections (10,000 in
# the idle scenario, the proxies' upstream connections) never take a port picked here before it is bound.
read -r EPHEMERAL_LOW _ < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LOW=32768
if ((EPHEMERAL_LOW > 12000)); then PORT_LO=10000 PORT_SPAN=$((EPHEMERAL_LOW - 10000)); else PORT_LO=20000 PORT_SPAN=30000; fi
USED_PORTS=()
PORT=0
pick_port() { # sets PORT to a free 127.0.0.1 port not handed out before
    local p i
    for i in $(seq 1 500); do
        p=$((PORT_LO + (RANDOM * 32768 + RANDOM) % PORT_SPAN))
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
pick_port; ORIGIN_STATUS_PORT=$PORT

for b in "${BODY_SIZES[@]}"; do
    head -c "${BODY_BYTES[$b]}" /dev/urandom >"$TMP/www/bodies/$b.bin"
    chmod 644 "$TMP/www/bodies/$b.bin"
done

nginx_user_line=""
if ((EUID == 0)) && id nobody >/dev/null 2>&1; then
    nginx_user_line="user nobody $(id -gn nobody);"
fi

nginx_common() { # $1 = instance name; paths that nginx would otherwise put under /var
    mkdir -p "$TMP/$1-temp"
    cat <<EOF
$nginx_user_line
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $TMP/$1.pid;
error_log $TMP/$1-error.log warn;
events { worker_connections $NGINX_WORKER_CONNECTIONS; }
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

# The origin: the 100-byte body on every path, the body files under /bodies/, and stub_status on a port of its
# own (its "accepts" counter is how the upstream connections each proxy opens are counted).
{
    nginx_common origin
    cat <<EOF
http {
$(nginx_http_common origin)
    keepalive_timeout 3600s;
    keepalive_requests 100000000;
    sendfile on;
    tcp_nopush on;
    server {
        listen 127.0.0.1:$ORIGIN_PORT backlog=4096;
        location / {
            default_type text/plain;
            return 200 "$BODY";
        }
        location /bodies/ {
            root $TMP/www;
            default_type application/octet-stream;
        }
    }
    server {
        listen 127.0.0.1:$ORIGIN_STATUS_PORT;
        location / { stub_status; }
    }
}
EOF
} >"$TMP/origin.conf"

# write_config proxy instance port h2c_port: the proxy's config in $TMP/<instance>.<ext>
write_config() {
    local proxy=$1 name=$2 port=$3 h2port=$4
    case $proxy in
        nginx)
            {
                nginx_common "$name"
                cat <<EOF
http {
$(nginx_http_common "$name")
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    # Buffer responses in memory only: with temp files on (the default) a 1 MiB body is written to disk and read
    # back, which no other proxy here does.
    proxy_max_temp_file_size 0;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        # the idle-connection cache per worker; at least the largest connection count, as the other proxies
        # (Portico: connection_pool_size 1000) keep that many, otherwise nginx closes and reopens upstream
        # connections under load
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout 3600s;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        # h2c with prior knowledge: "http2" on a listen without ssl (nginx 1.22 serves only HTTP/2 there)
        listen 127.0.0.1:$h2port http2 backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
            } >"$TMP/$name.conf"
            ;;
        haproxy)
            haproxy_config "$port" "$ORIGIN_PORT" "$HAPROXY_MAXCONN" "$h2port" >"$TMP/$name.cfg"
            ;;
        portico)
            pick_port
            cat >"$TMP/$name.yaml" <<EOF
# Portico with its default features on, as issue 5 measures it: a route, request ids, Prometheus metrics (on their
# own port, not scraped during the run) and the access log at its default 1 % sample (to a file). Admin listener
# off. h2c is served on the same port (prior knowledge).
server:
  bind_address: "127.0.0.1:$port"
  upgrade_socket: "off"
upstreams:
  origin:
    health_check: {enabled: false}
    servers:
      - "127.0.0.1:$ORIGIN_PORT"
routes:
  - name: all
    path: /*
    upstream: origin
monitoring:
  prometheus:
    enabled: true
    listen_address: "127.0.0.1"
    listen_port: $PORT
admin:
  enabled: false
logging:
  level: "info"
EOF
            ;;
        yarp) : ;;   # configured on the command line: bench/YarpProxy/Program.cs
    esac
}

check_config() { # check_config proxy instance
    case $1 in
        nginx) nginx -t -q -c "$TMP/$2.conf" -e "$TMP/$2-error.log" >"$TMP/$2-check.log" 2>&1 ;;
        haproxy) haproxy -c -q -f "$TMP/$2.cfg" >"$TMP/$2-check.log" 2>&1 ;;
        portico) "$PORTICO_BIN" validate "$TMP/$2.yaml" >"$TMP/$2-check.log" 2>&1 ;;
        yarp) true ;;
    esac || { cat "$TMP/$2-check.log" >&2; die "$1 config ($2) invalid"; }
}

STARTED_PID=0
start_proxy() { # start_proxy proxy instance port h2c_port: pinned to the proxy CPU; sets STARTED_PID
    local proxy=$1 name=$2 port=$3 h2port=$4
    case $proxy in
        nginx) "${PIN_PROXY[@]}" nginx -c "$TMP/$name.conf" -e "$TMP/$name-error.log" >"$TMP/$name.out" 2>&1 & ;;
        haproxy) "${PIN_PROXY[@]}" haproxy -db -f "$TMP/$name.cfg" >"$TMP/$name.out" 2>&1 & ;;
        portico)
            (cd "$TMP" && exec env -u PORTICO_LOG "${PIN_PROXY[@]}" "$PORTICO_BIN" "$TMP/$name.yaml" \
                >"$TMP/$name.out" 2>&1) &
            ;;
        yarp)
            (cd "$TMP" && exec env -u ASPNETCORE_URLS -u DOTNET_gcServer "${PIN_PROXY[@]}" "$YARP_BIN" \
                "127.0.0.1:$port" "127.0.0.1:$h2port" "http://127.0.0.1:$ORIGIN_PORT/" >"$TMP/$name.out" 2>&1) &
            ;;
    esac
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
}

log_of() { if [[ $1 == nginx ]]; then echo "$TMP/$2-error.log"; else echo "$TMP/$2.out"; fi; }

wait_ready() { # wait_ready name port pid logfile [curl options...]
    local name=$1 port=$2 pid=$3 logf=$4 i out
    shift 4
    for i in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$logf" >&2 || true; die "$name exited during startup"; }
        out=$(curl -s --max-time 2 "$@" "http://127.0.0.1:$port/" 2>/dev/null || true)
        if [[ $out == "$BODY" ]]; then return 0; fi
        sleep 0.2
    done
    tail -n 30 "$logf" >&2 || true
    die "$name on 127.0.0.1:$port did not answer the 100-byte body within 30 s (last answer: ${out:0:200})"
}

wait_ready_all() { # wait_ready_all proxy instance port h2c_port pid: HTTP/1.1, h2c, and a body when selected
    local proxy=$1 name=$2 port=$3 h2port=$4 pid=$5 logf
    logf=$(log_of "$proxy" "$name")
    wait_ready "$name" "$port" "$pid" "$logf"
    if has_scenario h2c; then
        wait_ready "$name (h2c)" "$h2port" "$pid" "$logf" --http2-prior-knowledge
    fi
}

nginx -t -q -c "$TMP/origin.conf" -e "$TMP/origin-error.log" 2>"$TMP/origin-check.log" ||
    { cat "$TMP/origin-check.log" >&2; die "origin nginx config invalid"; }

declare -A PORT_OF H2_PORT_OF PID_OF
for p in "${PROXIES[@]}"; do
    pick_port; PORT_OF[$p]=$PORT
    if [[ $p == portico ]]; then H2_PORT_OF[$p]=$PORT; else pick_port; H2_PORT_OF[$p]=$PORT; fi
    write_config "$p" "$p" "${PORT_OF[$p]}" "${H2_PORT_OF[$p]}"
    check_config "$p" "$p"
done

# ---------------------------------------------------------------------------------------------- start
log "origin: nginx on 127.0.0.1:$ORIGIN_PORT (stub_status on $ORIGIN_STATUS_PORT); temp dir $TMP; open files $NOFILE"
"${PIN_LOAD[@]}" nginx -c "$TMP/origin.conf" -e "$TMP/origin-error.log" >"$TMP/origin.out" 2>&1 &
ORIGIN_PID=$!
PIDS+=("$ORIGIN_PID")
wait_ready origin "$ORIGIN_PORT" "$ORIGIN_PID" "$TMP/origin-error.log"
for b in "${BODY_SIZES[@]}"; do
    n=$(curl -s --max-time 5 -o /dev/null -w '%{size_download}' "http://127.0.0.1:$ORIGIN_PORT/bodies/$b.bin" || true)
    [[ $n == "${BODY_BYTES[$b]}" ]] || die "origin did not serve /bodies/$b.bin (${BODY_BYTES[$b]} bytes; got '$n')"
done

ORIGIN_ACCEPTS_OK=1
origin_accepts() { # the origin's accepted-connections counter, minus nothing (see upstream_new)
    curl -s --max-time 5 "http://127.0.0.1:$ORIGIN_STATUS_PORT/" 2>/dev/null | awk 'NR == 3 { print $1 }'
}
is_uint "$(origin_accepts)" || { ORIGIN_ACCEPTS_OK=0; log "warning: the origin's stub_status does not answer; upstream connections are not counted"; }
upstream_new() { # upstream_new before after: connections accepted in between, without the status request itself
    if ((ORIGIN_ACCEPTS_OK)) && is_uint "$1" && is_uint "$2"; then echo $(($2 - $1 - 1)); else echo -1; fi
}

for p in "${PROXIES[@]}"; do
    start_proxy "$p" "$p" "${PORT_OF[$p]}" "${H2_PORT_OF[$p]}"
    PID_OF[$p]=$STARTED_PID
done
for p in "${PROXIES[@]}"; do
    wait_ready_all "$p" "$p" "${PORT_OF[$p]}" "${H2_PORT_OF[$p]}" "${PID_OF[$p]}"
    for b in "${BODY_SIZES[@]}"; do
        has_scenario bodies || break
        n=$(curl -s --max-time 10 -o /dev/null -w '%{size_download}' "http://127.0.0.1:${PORT_OF[$p]}/bodies/$b.bin" || true)
        [[ $n == "${BODY_BYTES[$b]}" ]] || die "$p did not pass /bodies/$b.bin through (${BODY_BYTES[$b]} bytes; got '$n')"
    done
    log "$p: 127.0.0.1:${PORT_OF[$p]}, h2c 127.0.0.1:${H2_PORT_OF[$p]} (pid ${PID_OF[$p]})"
done

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

mem_kib() { # mem_kib pid field: VmRSS or VmHWM summed over the process tree (nginx: master + worker), KiB
    local total=0 p v
    for p in $(tree_pids "$1"); do
        v=$(awk -v k="$2:" '$1 == k { print $2 }' "/proc/$p/status" 2>/dev/null || true)
        is_uint "$v" && total=$((total + v))
    done
    echo "$total"
}

pause_others() { local p; for p in "${PROXIES[@]}"; do [[ $p == "$1" ]] || signal_tree STOP "${PID_OF[$p]}"; done; }
resume_others() { local p; for p in "${PROXIES[@]}"; do [[ $p == "$1" ]] || signal_tree CONT "${PID_OF[$p]}"; done; }

run_wrk() { # run_wrk port connections seconds path outfile
    timeout --foreground -k 5 $(($3 + 30)) "${PIN_LOAD[@]}" \
        wrk -t1 -c"$2" -d"$3"s --latency --timeout 10s "http://127.0.0.1:$1$4" >"$5" 2>&1
}

run_h2load() { # run_h2load port connections streams seconds outfile [logfile]
    local logopt=()
    [[ -n ${6:-} ]] && logopt=(--log-file="$6")
    timeout --foreground -k 5 $(($4 + 30)) "${PIN_LOAD[@]}" \
        h2load -t1 -c"$2" -m"$3" -D"$4" "${logopt[@]}" "http://127.0.0.1:$1/" >"$5" 2>&1
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

# prints the same fields for h2load: req/s from its summary, percentiles from its per-request log (column 3 is
# the microseconds until the end of the response; h2load itself reports only min, max, mean and sd)
parse_h2load() { # parse_h2load outfile logfile
    local pct
    pct=$(awk -F'\t' '{ print $3 }' "$2" 2>/dev/null | sort -n | awk '
        { v[NR] = $1 }
        function at(q,   i) { i = int(q * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; return v[i] / 1000 }
        END { if (NR == 0) { print "0 0 0 0"; exit } printf "%.3f %.3f %.3f %.3f\n", at(0.50), at(0.75), at(0.90), at(0.99) }')
    awk -v pct="$pct" '
    /^finished in/ { rps = $4 }
    /^requests:/ { gsub(/,/, ""); ok = $8; err = $10 + $12 + $14 }
    /^status codes:/ { gsub(/,/, ""); non2xx = $5 + $7 + $9 }
    END {
        if (rps == "") exit 1
        split(pct, q, " ")
        printf "%s %s %s %s %s %d %d %d\n", rps, q[1], q[2], q[3], q[4], ok, err + 0, non2xx + 0
    }' "$1"
}

is_dotnet() { [[ $1 == portico || $1 == yarp ]]; }

# how a proxy that is no longer running ended (it is a child of this script, so wait gives its status)
exit_of() { # exit_of pid
    local rc=0
    wait "$1" 2>/dev/null || rc=$?
    if ((rc > 128)); then echo "killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"; else echo "exit status $rc"; fi
}
check_alive() { # check_alive proxy when
    kill -0 "${PID_OF[$1]}" 2>/dev/null ||
        die "$1 died $2: $(exit_of "${PID_OF[$1]}") (log: $(log_of "$1" "$1"), $(wc -c <"$(log_of "$1" "$1")" 2>/dev/null || echo 0) bytes)"
}

# The load cases of one round: scenario, case label, connections, streams (h2c), path, body bytes
CASES=()
if has_scenario conns; then for c in "${CONNS[@]}"; do CASES+=("conns c$c $c 1 / ${#BODY}"); done; fi
if has_scenario bodies; then
    for b in "${BODY_SIZES[@]}"; do CASES+=("bodies $b $BODY_CONNECTIONS 1 /bodies/$b.bin ${BODY_BYTES[$b]}"); done
fi
if has_scenario h2c; then CASES+=("h2c c${H2_CONNECTIONS}m$H2_STREAMS $H2_CONNECTIONS $H2_STREAMS / ${#BODY}"); fi

for p in "${PROXIES[@]}"; do
    ((${#CASES[@]} > 0)) || break   # the idle scenario alone measures fresh processes only
    if is_dotnet "$p"; then w=$WARMUP_DOTNET extra=$EXTRA_DOTNET; else w=$WARMUP_NATIVE extra=$EXTRA_NATIVE; fi
    ((w > 0)) || continue
    log "warm-up: $p, ${w} s at $MAX_CONNS connections$(has_scenario h2c && echo ", ${extra} s h2c")$(has_scenario bodies && echo ", ${extra} s ${BODY_SIZES[0]} bodies")"
    check_alive "$p" "before its warm-up"
    pause_others "$p"
    run_wrk "${PORT_OF[$p]}" "$MAX_CONNS" "$w" / "$TMP/out/warmup-$p.txt" || log "warning: warm-up run of $p failed (see KEEP_TMP=1)"
    if has_scenario h2c; then
        run_h2load "${H2_PORT_OF[$p]}" "$H2_CONNECTIONS" "$H2_STREAMS" "$extra" "$TMP/out/warmup-h2c-$p.txt" ||
            log "warning: h2c warm-up run of $p failed (see KEEP_TMP=1)"
    fi
    if has_scenario bodies; then
        run_wrk "${PORT_OF[$p]}" "$BODY_CONNECTIONS" "$extra" "/bodies/${BODY_SIZES[0]}.bin" "$TMP/out/warmup-body-$p.txt" ||
            log "warning: body warm-up run of $p failed (see KEEP_TMP=1)"
    fi
    resume_others "$p"
    check_alive "$p" "during its warm-up"
done

RUNS=$TMP/runs.tsv
IDLE=$TMP/idle.tsv
: >"$RUNS"
: >"$IDLE"

measure_load() { # measure_load round case_index "scenario case conns streams path bytes" proxy
    local round=$1 ci=$2 scenario label c m path bytes p=$4 out hlog rc m0 t0 o0 a0 t1 o1 a1 parsed
    read -r scenario label c m path bytes <<<"$3"
    out="$TMP/out/r$round-$scenario-$label-$p.txt"
    hlog="$TMP/out/r$round-$scenario-$label-$p.h2log"
    pause_others "$p"
    sleep "$SETTLE"
    a0=$(origin_accepts)
    t0=$(cpu_ticks "${PID_OF[$p]}")
    o0=$(cpu_ticks "$ORIGIN_PID")
    rc=0
    if [[ $scenario == h2c ]]; then
        run_h2load "${H2_PORT_OF[$p]}" "$c" "$m" "$DURATION" "$out" "$hlog" || rc=$?
    else
        run_wrk "${PORT_OF[$p]}" "$c" "$DURATION" "$path" "$out" || rc=$?
    fi
    t1=$(cpu_ticks "${PID_OF[$p]}")
    o1=$(cpu_ticks "$ORIGIN_PID")
    a1=$(origin_accepts)
    resume_others "$p"
    check_alive "$p" "during the run"
    if [[ $scenario == h2c ]]; then
        parsed=$( ((rc == 0)) && parse_h2load "$out" "$hlog") || parsed=""
        [[ $KEEP_TMP == 1 ]] || rm -f "$hlog"
    else
        parsed=$( ((rc == 0)) && parse_wrk "$out") || parsed=""
    fi
    if [[ -z $parsed ]]; then
        cat "$out" >&2 || true
        die "load against $p ($scenario $label) failed (exit $rc)"
    fi
    local rps p50 p75 p90 p99 req err non2xx cpu ocpu up
    read -r rps p50 p75 p90 p99 req err non2xx <<<"$parsed"
    cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
    ocpu=$(awk -v a="$o0" -v b="$o1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
    up=$(upstream_new "$a0" "$a1")
    printf '%s\n' "$round	$scenario	$label	$p	$c	$m	$bytes	$DURATION	$rps	$p50	$p75	$p90	$p99	$req	$err	$non2xx	$cpu	$ocpu	$up" >>"$RUNS"
    log "round $round/$REPEAT $scenario $label $p: $rps req/s, p50 ${p50} ms, p99 ${p99} ms, proxy CPU ${cpu} s, new upstream conns $up, errors $err, non-2xx $non2xx"
}

# The idle scenario: a FRESH process of the proxy (the warmed-up one has grown its pools and heaps), its RSS once
# ready, then with IDLE_CONNECTIONS keep-alive connections open, each having carried one request.
measure_idle() { # measure_idle round proxy
    local round=$1 p=$2 name port h2port pid cpid cout i line before with hwm a0 a1 ok failed open_s still up q
    name="$p-idle-r$round"
    pick_port; port=$PORT
    if [[ $p == portico ]]; then h2port=$port; else pick_port; h2port=$PORT; fi
    write_config "$p" "$name" "$port" "$h2port"
    check_config "$p" "$name"
    for q in "${PROXIES[@]}"; do signal_tree STOP "${PID_OF[$q]}"; done
    start_proxy "$p" "$name" "$port" "$h2port"
    pid=$STARTED_PID
    wait_ready "$name" "$port" "$pid" "$(log_of "$p" "$name")"
    sleep 1
    before=$(mem_kib "$pid" VmRSS)
    a0=$(origin_accepts)
    cout="$TMP/out/$name-client.txt"
    "${PIN_LOAD[@]}" "$PYTHON" "$BENCH_DIR/idle_clients.py" 127.0.0.1 "$port" "$IDLE_CONNECTIONS" \
        --concurrency "$IDLE_CONCURRENCY" >"$cout" 2>&1 &
    cpid=$!
    PIDS+=("$cpid")
    line=""
    for i in $(seq 1 1800); do   # up to 180 s to open them all
        line=$(grep -m1 '^ready ' "$cout" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $line ]] || { cat "$cout" >&2; stop_tree "$cpid"; stop_tree "$pid"; die "idle client against $p did not get ready"; }
    ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$line")
    failed=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")
    open_s=$(sed -n 's/.* open_s=\([0-9.]*\).*/\1/p' <<<"$line")
    sleep "$IDLE_SETTLE"
    with=$(mem_kib "$pid" VmRSS)
    hwm=$(mem_kib "$pid" VmHWM)
    a1=$(origin_accepts)
    kill -TERM "$cpid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    stop_tree "$cpid"
    still=$(sed -n 's/^closing still_open=\([0-9]*\).*/\1/p' "$cout")
    is_uint "$still" || still=-1
    kill -0 "$pid" 2>/dev/null || die "$p ($name) died during the idle scenario (log: $(log_of "$p" "$name"))"
    stop_tree "$pid"
    for q in "${PROXIES[@]}"; do signal_tree CONT "${PID_OF[$q]}"; done
    up=$(upstream_new "$a0" "$a1")
    printf '%s\n' "$round	$p	$IDLE_CONNECTIONS	$ok	$failed	$still	$before	$with	$hwm	$open_s	$up" >>"$IDLE"
    log "round $round/$REPEAT idle $p: RSS $((before / 1024)) MiB fresh, $((with / 1024)) MiB with $ok idle connections ($failed failed, $still still open at the end, opened in ${open_s} s), new upstream conns $up"
}

for ((round = 1; round <= REPEAT; round++)); do
    for ((ci = 0; ci < ${#CASES[@]}; ci++)); do
        # interleave: rotate the proxy order with every round and every case so no proxy always goes first
        for ((k = 0; k < ${#PROXIES[@]}; k++)); do
            measure_load "$round" "$ci" "${CASES[$ci]}" "${PROXIES[$(((k + round - 1 + ci) % ${#PROXIES[@]}))]}"
        done
    done
    if has_scenario idle; then
        for ((k = 0; k < ${#PROXIES[@]}; k++)); do
            measure_idle "$round" "${PROXIES[$(((k + round - 1) % ${#PROXIES[@]}))]}"
        done
    fi
done

# ---------------------------------------------------------------------------------------------- report
CPU_MODEL=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
[[ -n $CPU_MODEL ]] || CPU_MODEL=$(lscpu 2>/dev/null | awk -F': *' '/Model name/ {print $2; exit}' || true)
first_line() { "$@" 2>&1 | head -n1 || true; }   # version commands may exit non-zero (wrk -v does)
YARP_VERSION=""
if has_proxy yarp; then
    YARP_VERSION="Yarp.ReverseProxy $(sed -n 's/.*"Yarp.ReverseProxy\/\([0-9.]*\)".*/\1/p' "$(dirname "$YARP_BIN")/yarp-proxy.deps.json" 2>/dev/null | head -n1)"
fi
STAMP=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR"

{
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "quick=$QUICK"
    echo "nproc=$NPROC"
    echo "cpu_model=$CPU_MODEL"
    echo "kernel=$(uname -r)"
    echo "pinning=$PINNING"
    echo "proxy_cpu=$PROXY_CPU"
    echo "load_cpu=$LOAD_CPU"
    echo "nginx=$(first_line nginx -v)"
    echo "haproxy=$(first_line haproxy -v)"
    echo "dotnet=$(dotnet --version 2>/dev/null || echo n/a)"
    echo "portico=$("$PORTICO_BIN" version 2>/dev/null | head -n1 || echo n/a)"
    echo "yarp=$YARP_VERSION"
    echo "wrk=$(first_line wrk -v | awk '{print $1, $2}')"
    echo "h2load=$(has_scenario h2c && first_line h2load --version)"
    echo "python=$(has_scenario idle && first_line "$PYTHON" --version)"
    echo "proxies=${PROXIES[*]}"
    echo "yarp_skipped=$YARP_SKIPPED"
    echo "scenarios=${SCEN[*]}"
    echo "duration_s=$DURATION"
    echo "warmup_dotnet_s=$WARMUP_DOTNET"
    echo "warmup_native_s=$WARMUP_NATIVE"
    echo "warmup_dotnet_extra_s=$EXTRA_DOTNET"
    echo "warmup_native_extra_s=$EXTRA_NATIVE"
    echo "connections=${CONNS[*]}"
    echo "bodies=${BODY_SIZES[*]}"
    echo "body_connections=$BODY_CONNECTIONS"
    echo "h2_connections=$H2_CONNECTIONS"
    echo "h2_streams=$H2_STREAMS"
    echo "idle_connections=$IDLE_CONNECTIONS"
    echo "idle_settle_s=$IDLE_SETTLE"
    echo "repeat=$REPEAT"
    echo "settle_s=$SETTLE"
    echo "origin_body_bytes=${#BODY}"
    echo "open_files=$NOFILE"
    echo "upstream_counted=$ORIGIN_ACCEPTS_OK"
} >"$TMP/meta.txt"

"$PYTHON" "$BENCH_DIR/report.py" "$TMP/meta.txt" "$RUNS" "$IDLE" "$RESULTS_DIR/latest.json.tmp"
cp "$RESULTS_DIR/latest.json.tmp" "$RESULTS_DIR/$STAMP.json"
mv "$RESULTS_DIR/latest.json.tmp" "$RESULTS_DIR/latest.json"
log "results: ${RESULTS_DIR#"$REPO_DIR"/}/latest.json and ${RESULTS_DIR#"$REPO_DIR"/}/$STAMP.json"
