#!/usr/bin/env bash
# Checks systemd/smart-taskd.service (and the notify-reload drop-in's syntax where systemd knows it):
#   1. `systemd-analyze verify` must print nothing at all: unknown or misspelt keys only warn, with exit code 0;
#   2. `systemd-analyze security --offline=true` must give an overall exposure of at most $MAX_EXPOSURE (2.0).
# verify needs the ExecStart binaries to exist, so the unit is copied to a temporary directory with
# /usr/bin/smart-taskd rewritten to the binary given as argument (any existing executable works, e.g. /bin/true).
#
# Usage: systemd/verify.sh PATH-TO-SMART-TASKD-BINARY
set -euo pipefail

MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
here=$(cd "$(dirname "$0")" && pwd)
unit="$here/smart-taskd.service"

if [ $# -ne 1 ]; then
    echo "usage: $0 PATH-TO-SMART-TASKD-BINARY" >&2
    exit 2
fi
if [ ! -x "$1" ] || [ -d "$1" ]; then
    echo "verify.sh: $1 is not an executable file (build it first: cargo build)" >&2
    exit 2
fi
bin=$(realpath "$1")
command -v systemd-analyze >/dev/null || { echo "verify.sh: systemd-analyze not found (package systemd)" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Same file name (the unit name is taken from it), binary path rewritten, and mode 0644: verify warns about
# executable or world-writable unit files.
sed "s#/usr/bin/smart-taskd#${bin}#g" "$unit" >"$tmp/smart-taskd.service"
chmod 0644 "$tmp/smart-taskd.service"
if grep -q '/usr/bin/smart-taskd' "$tmp/smart-taskd.service"; then
    echo "verify.sh: could not rewrite the binary path" >&2
    exit 1
fi

fail=0
echo "== systemd-analyze verify ($(systemd-analyze --version | sed -n 1p))"
set +e
out=$(cd "$tmp" && systemd-analyze verify --man=no --generators=no "$tmp/smart-taskd.service" 2>&1)
rc=$?
set -e
if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify exited $rc and/or printed output (any output counts as a failure):"
    printf '%s\n' "$out" | sed "s#${tmp}/##g"
    fail=1
else
    echo "ok: no warnings"
fi

echo "== systemd-analyze verify with the notify-reload drop-in"
# On systemd >= 253 the drop-in must verify clean too; on 252 the only output allowed is the known
# "Failed to parse service type, ignoring: notify-reload" (proof that the rest of the drop-in parses).
version=$(systemd-analyze --version | awk 'NR == 1 { print $2 }')
mkdir "$tmp/smart-taskd.service.d"
cp "$here/smart-taskd-notify-reload.conf" "$tmp/smart-taskd.service.d/notify-reload.conf"
chmod 0644 "$tmp/smart-taskd.service.d/notify-reload.conf"
set +e
out=$(cd "$tmp" && systemd-analyze verify --man=no --generators=no "$tmp/smart-taskd.service" 2>&1)
rc=$?
set -e
rm -r "$tmp/smart-taskd.service.d"
if [ "${version%%.*}" -lt 253 ] 2>/dev/null; then
    out=$(printf '%s\n' "$out" | grep -v 'Failed to parse service type, ignoring: notify-reload' || true)
    note=" (systemd $version < 253: notify-reload unknown here, as expected)"
else
    note=""
fi
if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "FAIL: systemd-analyze verify with the drop-in exited $rc and/or printed output:"
    printf '%s\n' "$out" | sed "s#${tmp}/##g"
    fail=1
else
    echo "ok: no warnings$note"
fi

echo "== systemd-analyze security --offline=true"
set +e
sec=$(cd "$tmp" && systemd-analyze security --offline=true --no-pager "$tmp/smart-taskd.service" 2>"$tmp/security.err")
rc=$?
set -e
# Print the items still marked ✗ and the verdict, not the whole table.
printf '%s\n' "$sec" | grep -E '✗' || true
if [ -s "$tmp/security.err" ]; then
    echo "FAIL: systemd-analyze security printed to stderr:"
    sed "s#${tmp}/##g" "$tmp/security.err"
    fail=1
fi
line=$(printf '%s\n' "$sec" | grep -E 'Overall exposure level for .*: [0-9]+(\.[0-9]+)?' | tail -1 || true)
score=$(printf '%s\n' "$line" | sed -nE 's/.*Overall exposure level for [^:]*: ([0-9]+(\.[0-9]+)?).*/\1/p')
if [ -z "$score" ]; then
    echo "FAIL: no \"Overall exposure level\" line in the output of systemd-analyze security (exit $rc):"
    printf '%s\n' "$sec" | tail -5
    fail=1
else
    # Strip colour codes from the verdict line before printing it.
    printf '%s\n' "$line" | sed -E 's/\x1b\[[0-9;]*m//g'
    if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s + 0 > m + 0) }'; then
        echo "FAIL: exposure $score > $MAX_EXPOSURE"
        fail=1
    else
        echo "ok: exposure $score <= $MAX_EXPOSURE"
    fi
fi

if [ $fail -ne 0 ]; then
    echo "systemd unit check FAILED"
    exit 1
fi
echo "systemd unit check passed"
