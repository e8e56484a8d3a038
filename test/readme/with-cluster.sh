#!/usr/bin/env bash
# Starts the make run cluster in a fresh data directory, runs the README
# examples against it (test/readme/check.sh), and stops it: the CI form of
# "every example runs as written".
set -euo pipefail
cd "$(dirname "$0")/../.."
export RUN_DIR=${RUN_DIR:-$PWD/.run-readme}
rm -rf "$RUN_DIR"
log=$(mktemp)
deploy/local/run.sh >"$log" 2>&1 &
run=$!
trap 'kill -TERM $run 2>/dev/null; wait $run 2>/dev/null; rm -rf "$RUN_DIR" "$log"' EXIT
for _ in $(seq 1 60); do
	grep -q "hivemind is running" "$log" && break
	kill -0 $run 2>/dev/null || { cat "$log" >&2; exit 1; }
	sleep 1
done
grep -q "hivemind is running" "$log" || { echo "make run did not come up in 60 s" >&2; cat "$log" >&2; exit 1; }
HIVEMIND_TOKEN=$(cat "$RUN_DIR/operator-token") test/readme/check.sh
