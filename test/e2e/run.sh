#!/usr/bin/env bash
# End-to-end check of the docker-compose cluster: bring it up, wait until
# every container is healthy, call Node/Info and health on each through its
# published port with grpcurl (TLS with the dev CA from `make certs`, and the
# compose operator token), check that calls without a token or without TLS
# are refused, then tear everything down. Any miss fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
COMPOSE=${COMPOSE:-docker-compose}
GRPCURL=${GRPCURL:-$PWD/bin/grpcurl}
PROJECT=${COMPOSE_PROJECT_NAME:-hivemind-e2e}
export COMPOSE_PROJECT_NAME=$PROJECT
# The development operator token of docker-compose.yml, and the dev CA.
export HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
export HIVEMIND_CACERT=${HIVEMIND_CACERT:-$PWD/certs/ca.pem}
[ -f "$HIVEMIND_CACERT" ] || { echo "E2E FAIL: no $HIVEMIND_CACERT; run make certs" >&2; exit 1; }
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 5 "$@"; }

fail() { echo "E2E FAIL: $*" >&2; $COMPOSE ps >&2 || true; $COMPOSE logs --tail=30 >&2 || true; exit 1; }
cleanup() { $COMPOSE down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

# name:published-port:role
nodes=(
	controlplane-1:17001:controlplane controlplane-2:17002:controlplane controlplane-3:17003:controlplane
	host-1:17101:host host-2:17102:host
	dns-1:17201:dns dns-2:17202:dns
	notifier-1:17301:notifier notifier-2:17302:notifier
)

cleanup
$COMPOSE up -d --build || fail "compose up"

echo "waiting for ${#nodes[@]} healthy containers…"
deadline=$((SECONDS + 120))
while :; do
	healthy=0
	for n in "${nodes[@]}"; do
		svc=${n%%:*}
		id=$($COMPOSE ps -q "$svc")
		[ -n "$id" ] || fail "$svc has no container"
		st=$(docker inspect -f '{{.State.Health.Status}}' "$id")
		[ "$st" = healthy ] && healthy=$((healthy + 1))
	done
	[ $healthy -eq ${#nodes[@]} ] && break
	[ $SECONDS -lt $deadline ] || fail "only $healthy of ${#nodes[@]} containers healthy after 120s"
	sleep 1
done
echo "all ${#nodes[@]} containers healthy"

for n in "${nodes[@]}"; do
	IFS=: read -r svc port role <<<"$n"
	info=$(grpc "127.0.0.1:$port" hivemind.v1.Node/Info) || fail "$svc: Node/Info"
	grep -q "\"role\": \"$role\"" <<<"$info" || fail "$svc: Node/Info role is not $role: $info"
	grep -q "\"nodeName\": \"$svc\"" <<<"$info" || fail "$svc: Node/Info node name is not $svc: $info"
	health=$(grpc "127.0.0.1:$port" grpc.health.v1.Health/Check) || fail "$svc: health"
	grep -q SERVING <<<"$health" || fail "$svc: health is $health"
	# Captured first: with pipefail, grep -q leaving early can kill grpcurl
	# with SIGPIPE and fail a pipeline whose answer was right.
	svcs=$(grpc "127.0.0.1:$port" list) || fail "$svc: reflection"
	grep -q hivemind.v1.Node <<<"$svcs" || fail "$svc: reflection does not list hivemind.v1.Node: $svcs"
	out=$("$GRPCURL" -cacert "$HIVEMIND_CACERT" -max-time 5 "127.0.0.1:$port" hivemind.v1.Node/Info 2>&1) && fail "$svc: Node/Info without a token answered"
	grep -q Unauthenticated <<<"$out" || fail "$svc: Node/Info without a token: $out"
	"$GRPCURL" -plaintext -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 5 "127.0.0.1:$port" list >/dev/null 2>&1 && fail "$svc: answered plaintext"
	echo "ok  $svc ($role) on 127.0.0.1:$port"
done

for t in test/e2e/[0-9]*.sh; do
	[ -e "$t" ] || continue
	echo "== $t"
	GRPCURL=$GRPCURL COMPOSE=$COMPOSE "$t" || fail "$t"
done
echo "E2E PASS"
