#!/usr/bin/env bash
# The first command of README.md: import the example world, submit the example requests, and run the
# daemon until every request is decided, then show what it decided.
# Usage: scripts/demo.sh [path/to/smart-taskd]   (default: build and run with cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ]; then
  bin=$1
else
  cargo build --quiet
  bin=target/debug/smart-taskd
fi
run() { "$bin" "$@"; }

run migrate
run facts import examples/facts.yaml
for f in examples/requests/*; do
  run submit "$f"
done
run run --exit-when-idle
echo
echo "== decisions"
run list
echo
echo "== the first request, in detail"
run show 1
