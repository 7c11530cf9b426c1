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
cat <<'MSG'

Portico is starting on http://127.0.0.1:6188 (admin and status page: http://127.0.0.1:9080/). Try:
  curl -i http://127.0.0.1:6188/oauth/token      # public route, answered by the sample upstream on :3001
  curl -i http://127.0.0.1:6188/portico/hello    # answered by Portico itself
  curl -i http://127.0.0.1:6188/admin/           # auth_required: 401 without a bearer token
  curl    http://127.0.0.1:9080/status.json      # routes, upstreams and server state

MSG
"$bin" config/default.yaml
