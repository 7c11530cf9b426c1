#!/usr/bin/env bash
# Installs what Portico's build, tests and benchmarks need on a Debian machine (run as root).
# The .NET 10 SDK must already be on PATH: it is not in Debian's archive.
set -euo pipefail
if ! command -v dotnet >/dev/null 2>&1; then
    echo "error: the .NET 10 SDK (dotnet) is required and not on PATH; install it first (https://learn.microsoft.com/dotnet/core/install/linux-debian)" >&2
    exit 1
fi
# prometheus: only for promtool, which checks the /metrics exposition format in the unit tests.
# chromium: the headless browser that tests the admin dashboard (DashboardTests, over the DevTools protocol).
packages=(curl ca-certificates openssl procps nginx haproxy wrk nghttp2-client
          python3 python3-websockets python3-grpcio python3-grpc-tools prometheus chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Installing the package starts a Prometheus server on :9090 where systemd runs, the port Portico's metrics
    # listener defaults to. Only promtool is wanted: stop and disable a server that this run installed.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi
