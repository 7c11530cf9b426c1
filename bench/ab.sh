#!/usr/bin/env bash
# Interleaved A/B of two Portico builds (or one build under two environments), the way docs/performance.md measures
# one change on a noisy machine: both run at once pinned to the same core, each is warmed up, then ROUNDS rounds
# alternate D seconds of wrk load on A and on B while the other is stopped (SIGSTOP). Reported: requests per proxy
# CPU-second (utime+stime from /proc) per round, and the medians; with wrk also each round's p99 latency.
#
#   bench/ab.sh A_BIN B_BIN                      # two published builds (path to the `portico` executable)
#   A_ENV="X=1" B_ENV="DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0" bench/ab.sh BIN BIN
#   URL_PATH=/bodies/64k.bin CONNECTIONS=64 ROUNDS=10 bench/ab.sh A_BIN B_BIN
#   H2=1 CONNECTIONS=64 STREAMS=10 bench/ab.sh A_BIN B_BIN   # h2c with prior knowledge, h2load -m STREAMS
#   bench/ab.sh A_BIN haproxy                    # against HAProxy (bench/run.sh's config: one thread, http-reuse always)
#   BOTH=1 bench/ab.sh A_BIN B_BIN               # both orders (A B, then B A with the environments swapped), and the
#                                                # two B / A ratios combined by geometric mean (~7 minutes)
#
# Needs nginx (the origin), wrk, taskset, python3. Everything listens on 127.0.0.1; all processes it starts are
# stopped on exit. Build each side with `dotnet publish src/Portico.Cli -c Release -o <dir>`.
set -euo pipefail
# shellcheck source=bench/haproxy-config.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/haproxy-config.sh"

A_BIN=${1:?usage: bench/ab.sh A_BIN B_BIN}
B_BIN=${2:?usage: bench/ab.sh A_BIN B_BIN}
A_ENV=${A_ENV:-}
B_ENV=${B_ENV:-}

if [[ ${BOTH:-0} == 1 ]]; then
    # The side that runs first gains 5-15 % on some days (docs/performance.md): measure in both orders and combine.
    self=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
    first=$(BOTH=0 "$self" "$A_BIN" "$B_BIN" | tee /dev/stderr)
    second=$(BOTH=0 A_ENV="$B_ENV" B_ENV="$A_ENV" "$self" "$B_BIN" "$A_BIN" | tee /dev/stderr)
    python3 - "$first" "$second" <<'EOF'
import math, re, sys
def ratios(text):
    rps = re.search(r"^B / A = ([0-9.]+)", text, re.M)
    p99 = re.search(r"^p99 B / A = ([0-9.]+)", text, re.M)
    user = re.search(r"^user µs per request B / A = ([0-9.]+)", text, re.M)
    return float(rps.group(1)), (float(p99.group(1)) if p99 else None), float(user.group(1))
(r1, p1, u1), (r2, p2, u2) = ratios(sys.argv[1]), ratios(sys.argv[2])
print(f"both orders: B / A = {r1:.3f} and 1/{r2:.3f}: {math.sqrt(r1 / r2):.3f} (geometric mean), req per CPU-s")
if p1 and p2:
    print(f"both orders: p99 B / A = {p1:.3f} and 1/{p2:.3f}: {math.sqrt(p1 / p2):.3f} (geometric mean)")
print(f"both orders: user µs per request B / A = {u1:.3f} and 1/{u2:.3f}: {math.sqrt(u1 / u2):.3f} (geometric mean)")
EOF
    exit 0
fi
ROUNDS=${ROUNDS:-8}
D=${D:-6}
WARMUP=${WARMUP:-40}
CONNECTIONS=${CONNECTIONS:-64}
URL_PATH=${URL_PATH:-/}
H2=${H2:-0}
STREAMS=${STREAMS:-10}

LOADER=wrk; [[ $H2 == 1 ]] && LOADER=h2load
for tool in nginx $LOADER taskset python3; do
    command -v "$tool" >/dev/null || { echo "ab.sh: $tool not found" >&2; exit 1; }
done
for bin in "$A_BIN" "$B_BIN"; do
    [[ $bin == haproxy || -x $bin ]] || { echo "ab.sh: $bin is not an executable (nor 'haproxy')" >&2; exit 1; }
    [[ $bin != haproxy ]] || command -v haproxy >/dev/null || { echo "ab.sh: haproxy not found" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [[ $(nproc) -ge 2 ]]; then PIN_PROXY=(taskset -c 0); PIN_LOAD=(taskset -c 1); else PIN_PROXY=(); PIN_LOAD=(); fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/portico-ab.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
ORIGIN=$(free_port); PORT_A=$(free_port); PORT_B=$(free_port); METRICS_A=$(free_port); METRICS_B=$(free_port)

BODY=$(printf 'x%.0s' $(seq 1 100))
mkdir -p "$TMP/www/bodies"
head -c 65536 /dev/urandom >"$TMP/www/bodies/64k.bin"
head -c 1048576 /dev/urandom >"$TMP/www/bodies/1m.bin"
# nginx's workers run as an unprivileged user when the script runs as root: mktemp's 0700 would make every body a 403.
chmod 755 "$TMP" "$TMP/www" "$TMP/www/bodies"
chmod 644 "$TMP/www/bodies/"*.bin
cat >"$TMP/origin.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/origin.pid;
error_log $TMP/origin-error.log;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $TMP/cb; proxy_temp_path $TMP/pt; fastcgi_temp_path $TMP/ft; uwsgi_temp_path $TMP/ut; scgi_temp_path $TMP/st;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    sendfile on;
    tcp_nopush on;
    server {
        listen 127.0.0.1:$ORIGIN backlog=4096;
        location /bodies/ { root $TMP/www; default_type application/octet-stream; }
        location / { default_type text/plain; return 200 "$BODY"; }
    }
}
EOF
for side in A B; do
    if [[ $side == A ]]; then port=$PORT_A; metrics=$METRICS_A; else port=$PORT_B; metrics=$METRICS_B; fi
    # The same configs bench/run.sh gives HAProxy and Portico (Portico with its default features on).
    haproxy_config "$port" "$ORIGIN" 12048 >"$TMP/$side.cfg"
    cat >"$TMP/$side.yaml" <<EOF
server:
  bind_address: "127.0.0.1:$port"
  upgrade_socket: "off"
upstreams:
  origin:
    health_check: {enabled: false}
    servers: ["127.0.0.1:$ORIGIN"]
routes:
  - name: all
    path: /*
    upstream: origin
monitoring:
  prometheus: {enabled: true, listen_address: "127.0.0.1", listen_port: $metrics}
admin:
  enabled: false
logging:
  level: "info"
EOF
done

"${PIN_LOAD[@]}" nginx -c "$TMP/origin.conf" -e "$TMP/origin-error.log" >"$TMP/origin.out" 2>&1 &
PIDS+=($!)
start() { # start SIDE BIN ENV -> pid on stdout
    if [[ $2 == haproxy ]]; then
        # shellcheck disable=SC2086 # ENV is a list of VAR=value words
        env $3 "${PIN_PROXY[@]}" haproxy -db -f "$TMP/$1.cfg" >"$TMP/$1.out" 2>&1 &
    else
        # shellcheck disable=SC2086
        env $3 "${PIN_PROXY[@]}" "$2" "$TMP/$1.yaml" >"$TMP/$1.out" 2>&1 &
    fi
    echo $!
}
start A "$A_BIN" "$A_ENV" >"$TMP/A.pid"; A=$(cat "$TMP/A.pid"); PIDS+=("$A")
start B "$B_BIN" "$B_ENV" >"$TMP/B.pid"; B=$(cat "$TMP/B.pid"); PIDS+=("$B")

for port in "$PORT_A" "$PORT_B"; do
    for _ in $(seq 1 150); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port$URL_PATH" && break
        sleep 0.2
    done
    curl -sf -o /dev/null --max-time 10 "http://127.0.0.1:$port$URL_PATH" \
        || { echo "ab.sh: the proxy on port $port does not answer $URL_PATH" >&2; tail -n 20 "$TMP"/*.out >&2; exit 1; }
done

cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }   # utime stime
measure() { # measure pid port seconds -> "req_per_cpu_s req_per_s p99_ms user_us_per_req sys_us_per_req" (p99 "-" for h2load)
    local before after rps p99=- out
    before=$(cpu_ticks "$1")
    if [[ $H2 == 1 ]]; then
        rps=$("${PIN_LOAD[@]}" h2load -t1 -c"$CONNECTIONS" -m"$STREAMS" -D"$3" "http://127.0.0.1:$2$URL_PATH" | awk '/^finished in/{print $4}')
    else
        out=$("${PIN_LOAD[@]}" wrk -t1 -c"$CONNECTIONS" -d"$3"s --latency "http://127.0.0.1:$2$URL_PATH")
        rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        # wrk prints "99%   18.14ms" (or us / s)
        p99=$(awk '$1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                  printf "%.3f", (u == "us" ? v / 1000 : u == "s" ? v * 1000 : v) }' <<<"$out")
    fi
    after=$(cpu_ticks "$1")
    python3 - "$before" "$after" "$rps" "$3" "$p99" <<'EOF'
import os, sys
(u0, s0), (u1, s1) = (map(int, a.split()) for a in sys.argv[1:3])
rps, seconds, p99 = float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
tick = 1 / os.sysconf("SC_CLK_TCK")
user, system, requests = (u1 - u0) * tick, (s1 - s0) * tick, rps * seconds
cpu = user + system
print("%.0f %.0f %s %.2f %.2f" % (requests / cpu if cpu > 0 else 0, rps, p99,
      user * 1e6 / requests if requests else 0, system * 1e6 / requests if requests else 0))
EOF
}

echo "A: $A_BIN ${A_ENV:+($A_ENV)}"
echo "B: $B_BIN ${B_ENV:+($B_ENV)}"
echo "$LOADER -c$CONNECTIONS$([[ $H2 == 1 ]] && echo " -m$STREAMS") $URL_PATH; warm-up ${WARMUP} s each; $ROUNDS rounds of $D s, alternating; req per CPU-s / req/s$([[ $H2 == 1 ]] || echo " / p99 ms")"
kill -STOP "$B"; measure "$A" "$PORT_A" "$WARMUP" >/dev/null; kill -CONT "$B"
kill -STOP "$A"; measure "$B" "$PORT_B" "$WARMUP" >/dev/null; kill -CONT "$A"
: >"$TMP/rounds"
for round in $(seq 1 "$ROUNDS"); do
    # alternate which side goes first, so neither always follows the other
    if (( round % 2 )); then order="A B"; else order="B A"; fi
    for side in $order; do
        if [[ $side == A ]]; then pid=$A; other=$B; port=$PORT_A; else pid=$B; other=$A; port=$PORT_B; fi
        kill -STOP "$other"
        result=$(measure "$pid" "$port" "$D")
        kill -CONT "$other"
        echo "$round $side $result" | tee -a "$TMP/rounds"
    done
done
python3 - "$TMP/rounds" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = {}
for side in "AB":
    per_cpu = [float(r[2]) for r in rows if r[1] == side]
    rps = [float(r[3]) for r in rows if r[1] == side]
    med[side] = statistics.median(per_cpu)
    p99 = [float(r[4]) for r in rows if r[1] == side and len(r) > 4 and r[4] != "-"]
    med["p99" + side] = statistics.median(p99) if p99 else None
    # CPU per request split into user and kernel time: a change to the proxy's own code shows in the user part,
    # which the kernel's batching (the noisiest part on a VM) does not move.
    med["user" + side] = statistics.median(float(r[5]) for r in rows if r[1] == side)
    med["sys" + side] = statistics.median(float(r[6]) for r in rows if r[1] == side)
    print(f"{side}: median {med[side]:,.0f} req per CPU-s (min {min(per_cpu):,.0f}, max {max(per_cpu):,.0f}); median {statistics.median(rps):,.0f} req/s"
          + (f"; median p99 {med['p99' + side]:.2f} ms" if p99 else "")
          + f"; median CPU per request {med['user' + side]:.2f} µs user + {med['sys' + side]:.2f} µs kernel")
by_round = {}
for r in rows:
    by_round.setdefault(r[0], {})[r[1]] = float(r[2])
wins = sum(1 for v in by_round.values() if len(v) == 2 and v["B"] > v["A"])
print(f"B / A = {med['B'] / med['A']:.3f} (medians); B better in {wins} of {len(by_round)} rounds")
if med["p99A"] and med["p99B"]:
    print(f"p99 B / A = {med['p99B'] / med['p99A']:.3f} (medians)")
print(f"user µs per request B / A = {med['userB'] / med['userA']:.3f}; kernel µs per request B / A = {med['sysB'] / med['sysA']:.3f} (medians)")
EOF
