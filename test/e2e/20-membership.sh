#!/usr/bin/env bash
# Membership in compose: ListMembers from every role shows the 9 members,
# alive in the registry and in gossip; `docker kill` of a host turns it
# failed there; starting it again brings it back as one member, newer.
# Runs against the cluster test/e2e/run.sh started.
set -euo pipefail
COMPOSE=${COMPOSE:-docker-compose}
GRPCURL=${GRPCURL:-bin/grpcurl}
HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
HIVEMIND_CACERT=${HIVEMIND_CACERT:-certs/ca.pem}
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 5 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }
list() { grpc "127.0.0.1:$1" hivemind.v1.Membership/ListMembers; }
# count port state: members whose registry state is $state
count() { list "$1" | grep -c "\"state\": \"$2\"" || true; }
# state_of port name: the registry state of one member
state_of() { list "$1" | tr -d '\n ' | grep -o "\"name\":\"$2\"[^}]*}[^}]*\"state\":\"MEMBER_STATE_[A-Z]*\"" | grep -o 'MEMBER_STATE_[A-Z]*' | head -1; }

# wait_for what limit_s cmd…
wait_for() {
	local what=$1 limit=$2; shift 2
	local t0=$SECONDS
	until "$@"; do
		[ $((SECONDS - t0)) -lt "$limit" ] || fail "$what not within ${limit}s"
		sleep 0.5
	done
}

all_alive() { [ "$(count "$1" MEMBER_STATE_ALIVE)" = 9 ] && [ "$(count "$1" alive)" = 9 ]; }
for port in 17001 17002 17003 17101 17102 17201 17202 17301 17302; do
	wait_for "9 alive members (registry and gossip) seen from 127.0.0.1:$port" 60 all_alive "$port"
done
echo "ok  ListMembers from all 9 nodes: 9 members, alive in the registry and in gossip"

# host-1 started with only the CA certificate: it serves the certificate the
# control plane issued it, naming it (URI SAN) and signed by the dev CA.
cert=$(openssl s_client -connect 127.0.0.1:17101 -CAfile "$HIVEMIND_CACERT" -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -text) ||
	fail "host-1's certificate does not verify against $HIVEMIND_CACERT"
[[ $cert == *"URI:hivemind://node/host-1"* ]] || fail "host-1 serves no certificate issued to it: $cert"
echo "ok  host-1 serves a certificate the control plane issued it (URI:hivemind://node/host-1)"

t0=$(now_ms)
docker kill "$($COMPOSE ps -q host-2)" >/dev/null
is_failed() { [ "$(state_of 17201 host-2)" = MEMBER_STATE_FAILED ]; }
wait_for "host-2 failed in the registry" 30 is_failed
echo "ok  host-2 killed → failed after $(( $(now_ms) - t0 )) ms (seen from dns-1)"

$COMPOSE start host-2 >/dev/null
back() { [ "$(state_of 17001 host-2)" = MEMBER_STATE_ALIVE ] && all_alive 17001; }
wait_for "host-2 alive again with 9 members" 60 back
n=$(list 17001 | grep -c '"name": "host-2"')
[ "$n" = 1 ] || fail "host-2 listed $n times"
echo "ok  host-2 restarted → alive again, one member"
