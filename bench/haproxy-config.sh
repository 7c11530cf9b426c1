# Sourced by bench/run.sh and bench/ab.sh: the one HAProxy configuration both measure (one thread, keep-alive on both
# sides, idle server connections shared between clients).
#
#   haproxy_config PORT ORIGIN_PORT MAXCONN [H2_PORT] > file.cfg
#
# H2_PORT adds a listener for h2c with prior knowledge (`proto h2`).
haproxy_config() {
    local port=$1 origin=$2 maxconn=$3 h2port=${4:-}
    cat <<EOF
global
    nbthread 1
    maxconn $maxconn
    no strict-limits

defaults
    mode http
    maxconn $maxconn
    option http-keep-alive
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-keep-alive 75s
    timeout http-request 10s
    http-reuse always

frontend bench
    bind 127.0.0.1:$port backlog 4096
EOF
    [[ -n $h2port ]] && echo "    bind 127.0.0.1:$h2port proto h2 backlog 4096"
    cat <<EOF
    default_backend origin

backend origin
    server origin1 127.0.0.1:$origin
EOF
}
