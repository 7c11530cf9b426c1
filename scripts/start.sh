#!/usr/bin/env bash
# Quick start: installs what is needed, builds Portico, starts the sample upstreams (ports 3001-3005, the
# `portico echo` server) and runs the gateway on config/default.yaml in the foreground (Ctrl-C stops both).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
dotnet publish src/Portico.Cli -c Release -o artifacts/portico --nologo -v quiet
bin=artifacts/portico/portico
"$bin" echo --listen 127.0.0.1:3001 127.0.0.1:3002 127.0.0.1:3003 127.0.0.1:3004 127.0.0.1:3005 &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
# The admin API and dashboard need a token; make one for this run unless the caller set one.
export PORTICO_ADMIN_TOKEN="${PORTICO_ADMIN_TOKEN:-$(openssl rand -hex 16)}"
cat <<MSG

Portico is starting on http://127.0.0.1:6188 (dashboard: http://127.0.0.1:9080/, token $PORTICO_ADMIN_TOKEN). Try:
  curl -i http://127.0.0.1:6188/oauth/token      # public route, answered by the sample upstream on :3001
  curl -i http://127.0.0.1:6188/portico/hello    # answered by Portico itself
  curl -i http://127.0.0.1:6188/admin/           # auth_required: 401 without a bearer token
  curl -H "Authorization: Bearer $PORTICO_ADMIN_TOKEN" http://127.0.0.1:9080/api/upstreams   # servers and their state

MSG
"$bin" config/default.yaml
