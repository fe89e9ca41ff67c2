#!/usr/bin/env bash
# Lints a real scrape: starts BIN (smart-taskd) with the shipped configuration (config/) on a fresh SQLite
# database in a temporary directory, its endpoint on a free port, scrapes /metrics once the daemon is ready,
# and runs `promtool check metrics` on the scrape. Exits non-zero if promtool prints anything (a family
# without `# HELP`, a counter without `_total`, a wrong type, …) or if the daemon does not become ready.
#   monitoring/check-metrics.sh target/debug/smart-taskd
# Needs promtool (Debian: apt-get install prometheus) and python3 (standard library only).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 BIN (the smart-taskd binary)" >&2; exit 2; }
bin=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
[ -x "$bin" ] || { echo "check-metrics.sh: $1 is not an executable" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v promtool >/dev/null || { echo "check-metrics.sh: promtool not found (Debian: apt-get install prometheus)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "check-metrics.sh: python3 not found" >&2; exit 2; }

tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# The shipped layout, so that the configuration's relative paths (../rules, ../var, templates) hold.
cp -r "$repo/config" "$tmp/config"
ln -s "$repo/rules" "$tmp/rules"
mkdir "$tmp/var"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/^  listen: .*/  listen: \"127.0.0.1:$port\"/" "$tmp/config/smart-task.yaml"
grep -q "listen: \"127.0.0.1:$port\"" "$tmp/config/smart-task.yaml" \
    || { echo "check-metrics.sh: cannot set api.listen in the configuration" >&2; exit 2; }

# The shipped configuration runs promoted rule sets: promote the shipped rules first.
env -u SMART_TASK_DATABASE_URL -u RUST_LOG "$bin" --config "$tmp/config/smart-task.yaml" migrate >/dev/null
env -u SMART_TASK_DATABASE_URL -u RUST_LOG "$bin" --config "$tmp/config/smart-task.yaml" \
    rules promote --author check-metrics --reason "monitoring check" >"$tmp/promote.log" 2>&1 \
    || { cat "$tmp/promote.log" >&2; exit 2; }
env -u SMART_TASK_DATABASE_URL -u RUST_LOG "$bin" --config "$tmp/config/smart-task.yaml" run >"$tmp/daemon.log" 2>&1 &
pid=$!

fetch() {
    python3 - "$port" "$1" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", timeout=10) as r:
        sys.stdout.write(r.read().decode())
except Exception:
    sys.exit(1)
PY
}
for _ in $(seq 1 300); do
    fetch /readyz >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo "check-metrics.sh: the daemon exited:" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
    sleep 0.1
done
fetch /readyz >/dev/null || { echo "check-metrics.sh: the daemon is not ready after 30 s:" >&2; cat "$tmp/daemon.log" >&2; exit 1; }
fetch /metrics >"$tmp/scrape.txt"

problems=$(promtool check metrics <"$tmp/scrape.txt" 2>&1) || true
if [ -n "$problems" ]; then
    echo "FAIL: promtool check metrics on a scrape of $1:"
    echo "$problems"
    exit 1
fi
echo "ok: promtool check metrics finds nothing in a scrape of $1 ($(grep -c '^# TYPE' "$tmp/scrape.txt") families)"
