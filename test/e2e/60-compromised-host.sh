#!/usr/bin/env bash
# A compromised host (issue 13): from inside host-2's container, with
# host-2's own credentials (the cluster secret and TLS files of its
# environment, its node key in /data), test/attack tries every attack of the
# trust model; each must be refused with the code the model names. Then,
# from outside: the leader is the same, host-1's registry entry and DNS
# answers are unchanged, and no notifier restarted. Runs against the
# cluster test/e2e/run.sh started.
set -euo pipefail
COMPOSE=${COMPOSE:-docker-compose}
GRPCURL=${GRPCURL:-bin/grpcurl}
HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
HIVEMIND_CACERT=${HIVEMIND_CACERT:-certs/ca.pem}
# Per-caller cap of concurrent watches on a control-plane member; the
# attack opens one more than this.
WATCH_CAP=${WATCH_CAP:-1000}
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 5 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v dig >/dev/null || fail "dig is not installed (Debian: apt-get install dnsutils)"
[ -x dist/hivemind-attack ] || fail "no dist/hivemind-attack; run make dist"
q() { dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 "$2" A 2>/dev/null || true; }

leader() { grpc 127.0.0.1:17001 hivemind.v1.ControlPlane/Status | sed -n 's/.*"leaderName": "\([^"]*\)".*/\1/p'; }
host1_entry() { grpc -d '{"stale":true}' 127.0.0.1:17001 hivemind.v1.Membership/ListMembers | tr -d ' \n' | grep -o '"name":"host-1"[^}]*' | head -1; }
started() { for s in notifier-1 notifier-2; do docker inspect -f "$s {{.RestartCount}} {{.State.StartedAt}}" "$($COMPOSE ps -q $s)"; done; }

# A subscription with a signing secret, so there is a secret to try to read.
grpc -d '{"subscription":{"name":"e2e-trust-hook","target":"http://webhook-sink:8080/trust","types":["app.trust"],"secret":"e2e-signing-secret"}}' \
	127.0.0.1:17301 hivemind.v1.Notifier/CreateSubscription >/dev/null || fail "CreateSubscription"

lead0=$(leader)
[ -n "$lead0" ] || fail "no leader before the attacks"
entry0=$(host1_entry)
[ -n "$entry0" ] || fail "host-1 is not in the registry"
dns0="$(q 1053 host-1.node.hive) / $(q 1054 host-1.node.hive)"
[[ "$dns0" =~ ^[0-9.]+\ /\ [0-9.]+$ ]] || fail "host-1.node.hive before the attacks: $dns0"
notifiers0=$(started)

id=$($COMPOSE ps -q host-2)
docker cp dist/hivemind-attack "$id:/hivemind-attack" >/dev/null
docker exec "$id" /hivemind-attack -watches $((WATCH_CAP + 1)) || fail "an attack from host-2 was not refused"

# The cluster is unaffected.
sleep 3 # a step-down or a restart would show within a few heartbeats
[ "$(leader)" = "$lead0" ] || fail "leader changed from $lead0 to $(leader)"
echo "ok  leader still $lead0"
[ "$(host1_entry)" = "$entry0" ] || fail "host-1's registry entry changed: $entry0 → $(host1_entry)"
echo "ok  host-1's registry entry unchanged"
dns1="$(q 1053 host-1.node.hive) / $(q 1054 host-1.node.hive)"
[ "$dns1" = "$dns0" ] || fail "host-1.node.hive changed: $dns0 → $dns1"
[[ "$(q 1053 host-2.node.hive)" =~ ^[0-9.]+$ ]] || fail "host-2.node.hive no longer answered"
echo "ok  host-1.node.hive still $dns0 from both dns processors"
[ "$(started)" = "$notifiers0" ] || fail "a notifier restarted: $notifiers0 → $(started)"
for p in 17301 17302; do
	h=$(grpc "127.0.0.1:$p" grpc.health.v1.Health/Check) || fail "notifier on $p: health"
	grep -q SERVING <<<"$h" || fail "notifier on $p not serving: $h"
done
echo "ok  no notifier restarted, both serving"
grpc -d '{"name":"e2e-trust-hook"}' 127.0.0.1:17301 hivemind.v1.Notifier/DeleteSubscription >/dev/null || true
