#!/usr/bin/env bash
# Runs the command examples of the README and docs/hivectl.md against a
# running `make run` cluster, in the order they are written, and fails on
# the first one that exits non-zero. An example is a line of a ```sh block
# that starts with bin/hivectl or bin/grpcurl, or pipes into bin/hivectl
# (a line may go on over the next lines while a quote is open).
#
#   make run                  # in one terminal
#   test/readme/check.sh      # in another, from anywhere
#
# ONLY=hivectl (or grpcurl) runs only those examples; FILES overrides the
# files read. Examples for the compose cluster (ports 17xxx) are skipped:
# make e2e checks that one.
set -euo pipefail
cd "$(dirname "$0")/../.."
FILES=${FILES:-README.md docs/hivectl.md}
ONLY=${ONLY:-}
if [ -z "${HIVEMIND_TOKEN:-}" ] && [ -s .run/operator-token ]; then
	HIVEMIND_TOKEN=$(cat .run/operator-token)
fi
export HIVEMIND_TOKEN=${HIVEMIND_TOKEN:?no token: start make run first (it writes .run/operator-token) or set HIVEMIND_TOKEN}

# examples FILE prints one example per NUL-terminated record.
examples() {
	awk '
		/^```sh/ { inblock = 1; next }
		/^```/   { inblock = 0; next }
		!inblock { next }
		cont     { cmd = cmd "\n" $0; if (gsub(/\047/, "\047", $0) % 2 == 1) { cont = 0; printf "%s%c", cmd, 0 }; next }
		/^bin\/(hivectl|grpcurl) / || /\| *bin\/hivectl / {
			q = gsub(/\047/, "\047", $0)
			if (q % 2 == 1) { cont = 1; cmd = $0; next }
			printf "%s%c", $0, 0
		}
	' "$1"
}

ran=0 skipped=0
for f in $FILES; do
	while IFS= read -r -d '' ex; do
		case $ex in
		*127.0.0.1:170*|*127.0.0.1:171*|*127.0.0.1:172*|*127.0.0.1:173*) skipped=$((skipped + 1)); continue ;;
		esac
		if [ -n "$ONLY" ] && [[ $ex != bin/$ONLY* && $ex != *"| bin/$ONLY"* ]]; then
			skipped=$((skipped + 1))
			continue
		fi
		echo "\$ $ex"
		set +e
		out=$(timeout 30 bash -c "$ex" 2>&1)
		rc=$?
		set -e
		# grpcurl -max-time on a stream ends with DeadlineExceeded (64+4).
		if [ $rc -eq 68 ] && [[ $ex == *-max-time* ]]; then rc=0; fi
		if [ $rc -ne 0 ]; then
			echo "$out" | tail -n 20 >&2
			echo "README CHECK FAIL ($f): exit $rc: $ex" >&2
			exit 1
		fi
		echo "$out" | head -n 5
		ran=$((ran + 1))
	done < <(examples "$f")
done
[ $ran -gt 0 ] || { echo "README CHECK FAIL: no example found in $FILES" >&2; exit 1; }
echo "README check: $ran examples ran, $skipped skipped"
