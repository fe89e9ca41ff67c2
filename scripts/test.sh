#!/usr/bin/env bash
# The second command of README.md: every test, on SQLite and on PostgreSQL, on a machine with nothing installed by
# hand. What the tests need and a fresh machine may lack is brought in here or by the test harness itself:
#   - PostgreSQL's server binaries (initdb, pg_ctl, postgres) for the throwaway server of tests/common/pg.rs,
#     promtool (package prometheus) for the lint of a real /metrics scrape, and poppler-utils' pdftotext and
#     pdfinfo for the esito PDFs, and Chromium for the console's browser tests (tests/console_browser.rs):
#     installed from the distribution's packages when missing (needs root; otherwise says what to install);
#   - Python's aiosmtpd for the real SMTP server of the notification tests: the harness installs it into a
#     project-local virtual environment under the target directory (tests/common/python.rs).
# Arguments go to `cargo test` (e.g. scripts/test.sh sqlite, scripts/test.sh --test pipeline).
set -euo pipefail
cd "$(dirname "$0")/.."

pg_bin() {
    if command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return; fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
# Debian packages the tests need, installed when missing (needs root; otherwise says what to install).
missing=""
if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then missing="$missing postgresql"; fi
command -v promtool >/dev/null || missing="$missing prometheus"    # promtool lints a real /metrics scrape
if ! command -v pdftotext >/dev/null || ! command -v pdfinfo >/dev/null; then
    missing="$missing poppler-utils"                                # pdftotext and pdfinfo read the esito PDFs
fi
command -v chromium >/dev/null || missing="$missing chromium"      # the console's browser tests drive it
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing the distribution's packages:$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
        echo "scripts/test.sh: missing packages:$missing (PostgreSQL's server binaries initdb, pg_ctl, postgres;" >&2
        echo "  promtool; pdftotext, pdfinfo; chromium): install them (Debian/Ubuntu: sudo apt-get install$missing) and run this again" >&2
        exit 1
    fi
fi
echo "== PostgreSQL for the tests: $("$(pg_bin)/postgres" --version)"
# The PostgreSQL variants of the tests must really run here: a missing server is an error, not a skip.
export SMART_TASK_TEST_REQUIRE_POSTGRES=1

echo "== cargo test $*"
exec cargo test --locked "$@"
