#!/usr/bin/env bash
# Backup and restore in compose (issue 15, docs/operations.md): write 1,000
# keys and 20 subscriptions, save a snapshot, destroy the three
# control-plane containers and their volumes, restore each member's volume
# from the file, start them, and check that every key, subscription and
# member is back, in a new epoch, and that DNS answers as before. Runs
# against a running compose cluster (project hivemind-e2e).
#
# Not in make e2e yet: it passed twice and then failed once at its last
# step ("DNS answers as before not within 60s" after the restore), so the
# dns processors' re-bootstrap into a new epoch needs fixing first (see the
# issue 15 note).
set -euo pipefail
COMPOSE=${COMPOSE:-docker-compose}
GRPCURL=${GRPCURL:-bin/grpcurl}
PROJECT=${COMPOSE_PROJECT_NAME:-hivemind-e2e}
HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
HIVEMIND_CACERT=${HIVEMIND_CACERT:-certs/ca.pem}
CP=${CP:-dist/hivemind-controlplane}
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 10 "$@"; }
call() { grpc -d "${3:-{\}}" "127.0.0.1:$1" "hivemind.v1.ControlPlane/$2"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
q() { dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 "$2" "${3:-A}" 2>/dev/null | sort || true; }
wait_for() { # what limit_s cmd…
	local what=$1 limit=$2; shift 2
	local t0=$SECONDS
	until "$@"; do
		[ $((SECONDS - t0)) -lt "$limit" ] || fail "$what not within ${limit}s"
		sleep 0.5
	done
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"

# 1,000 keys, in transactions of 125 puts.
for t in $(seq 0 7); do
	ops=""
	for i in $(seq $((t * 125)) $((t * 125 + 124))); do
		ops+="${ops:+,}{\"put\":{\"key\":\"/app/e2e-backup/k$(printf %04d "$i")\",\"value\":\"$(printf v%d "$i" | base64)\"}}"
	done
	call 17001 Txn "{\"success\":[$ops]}" >/dev/null || fail "txn $t"
done
for i in $(seq 1 20); do
	grpc -d "{\"subscription\":{\"name\":\"e2e-backup-$i\",\"target\":\"http://webhook-sink:8080/backup\",\"types\":[\"app.backup\"]}}" \
		127.0.0.1:17301 hivemind.v1.Notifier/CreateSubscription >/dev/null || fail "CreateSubscription e2e-backup-$i"
done
echo "ok  1,000 keys and 20 subscriptions written"
keys() { call "$1" Range '{"prefix":"/app/e2e-backup/","limit":2000}' | grep -c '"key": "/app/e2e-backup/' || true; }
subs() { call "$1" Range '{"prefix":"/notifier/subscriptions/","limit":2000}' | grep -o 'e2e-backup-[0-9]*' | sort -u | wc -l; }
[ "$(keys 17001)" = 1000 ] || fail "$(keys 17001) keys before the backup"
dns_a=$(q 1053 web.service.hive A)
dns_srv=$(q 1054 _web._tcp.service.hive SRV)
[ -n "$dns_a" ] || fail "no DNS answer before the backup"
epoch=$(call 17001 Status | sed -n 's/.*"epoch": "\([0-9]*\)".*/\1/p' | head -1)

# The runbook's commands: save from a follower or the leader alike, check.
"$CP" snapshot save --endpoint 127.0.0.1:17002 --token "$HIVEMIND_TOKEN" --tls-ca "$HIVEMIND_CACERT" "$work/backup.hmsnap" || fail "snapshot save"
"$CP" snapshot status "$work/backup.hmsnap" || fail "snapshot status"
chmod 644 "$work/backup.hmsnap"

# Lose all three members, data included.
$COMPOSE rm -sfv controlplane-1 controlplane-2 controlplane-3 >/dev/null
for n in 1 2 3; do docker volume rm "${PROJECT}_controlplane-$n-data" >/dev/null; done
echo "ok  the three control-plane containers and volumes are gone"

for n in 1 2 3; do
	$COMPOSE run --rm --no-deps -v "$work:/backup:ro" controlplane-$n restore --snapshot /backup/backup.hmsnap ||
		fail "restore controlplane-$n"
done
$COMPOSE up -d controlplane-1 controlplane-2 controlplane-3 >/dev/null
leads() { call "$1" Status 2>/dev/null | grep -q '"leaderName": "controlplane-'; }
wait_for "a leader after the restore" 90 leads 17001

all_keys() { [ "$(keys "$1")" = 1000 ]; }
wait_for "1,000 keys on controlplane-3" 30 all_keys 17003
for p in 17001 17002 17003; do
	[ "$(keys $p)" = 1000 ] || fail "127.0.0.1:$p has $(keys $p) of 1,000 keys after the restore"
done
[ "$(subs 17002)" = 20 ] || fail "$(subs 17002) of 20 subscriptions after the restore"
members=$(call 17001 MemberList)
for n in 1 2 3; do grep -q "\"name\": \"controlplane-$n\"" <<<"$members" || fail "controlplane-$n missing: $members"; done
new_epoch=$(call 17001 Status | sed -n 's/.*"epoch": "\([0-9]*\)".*/\1/p' | head -1)
[ "$new_epoch" -gt "${epoch:-1}" ] || fail "epoch $new_epoch after the restore, was ${epoch:-1}"
echo "ok  every key, subscription and member back; epoch $epoch → $new_epoch"

registry() { grpc 127.0.0.1:17001 hivemind.v1.Membership/ListMembers 2>/dev/null; }
for n in host-1 host-2 dns-1 dns-2; do
	grep -q "\"name\": \"$n\"" <<<"$(registry)" || fail "$n missing from the registry after the restore"
done
same_dns() { [ "$(q 1053 web.service.hive A)" = "$dns_a" ] && [ "$(q 1054 _web._tcp.service.hive SRV)" = "$dns_srv" ]; }
wait_for "DNS answers as before" 60 same_dns
echo "ok  hosts and dns processors in the registry, DNS answers as before"
