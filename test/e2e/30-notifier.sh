#!/usr/bin/env bash
# Notifier in compose, with the webhook and SMTP sinks of test/sink:
#  1. a webhook and a mail subscription on member events (member.failed,
#     member.alive, member.joined); `docker kill` of host-2 → the webhook
#     sink gets exactly one member.failed for it and the SMTP sink exactly
#     one "host-2 is down"; starting it again → one member.joined and one
#     "host-2 joined the cluster"; `docker pause` → failed / "is down" again,
#     `unpause` → one member.alive and one "host-2 is up again";
#  2. exactly once at compose scale: 500 Puts under /app/e2e/ with
#     notifier-1 SIGKILLed (`docker kill`) mid-run and started again → every
#     event reaches the sink; repeated webhook-ids are counted and printed
#     (allowed only for a crash between a send and its completion).
# Runs against the cluster test/e2e/run.sh started.
set -euo pipefail
COMPOSE=${COMPOSE:-docker-compose}
GRPCURL=${GRPCURL:-bin/grpcurl}
HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
HIVEMIND_CACERT=${HIVEMIND_CACERT:-certs/ca.pem}
EVENTS=${HIVEMIND_E2E_NOTIFIER_EVENTS:-500}
# The signing secret webhook-sink verifies with (docker-compose.yml).
SECRET=whsec_ZTJlLXdlYmhvb2stc2luay1zZWNyZXQ=
HOOKS=http://127.0.0.1:18081/received
MAILS=http://127.0.0.1:18082/received
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 10 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# wait_for what limit_s cmd…
wait_for() {
	local what=$1 limit=$2; shift 2
	local t0=$SECONDS
	until "$@"; do
		[ $((SECONDS - t0)) -lt "$limit" ] || fail "$what not within ${limit}s"
		sleep 0.5
	done
}
# hooks jq-filter: the number of webhooks the filter selects.
hooks() { curl -fsS "$HOOKS" | jq "[.[] | select($1)] | length"; }
mails() { curl -fsS "$MAILS" | jq "[.[] | select($1)] | length"; }
at_least() { [ "$("$1" "$2")" -ge "$3" ]; } # hooks|mails filter n

sinks_up() { curl -fsS "$HOOKS" >/dev/null 2>&1 && curl -fsS "$MAILS" >/dev/null 2>&1; }
wait_for "the sinks answering" 30 sinks_up

subscribe() { # port json
	grpc -d "{\"subscription\":$2}" "127.0.0.1:$1" hivemind.v1.Notifier/CreateSubscription >/dev/null ||
		fail "CreateSubscription $2 on 127.0.0.1:$1"
}
types='"types":["member.failed","member.alive","member.joined"]'
subscribe 17301 "{\"name\":\"e2e-members-hook\",\"target\":\"http://webhook-sink:8080/members\",$types,\"secret\":\"$SECRET\"}"
subscribe 17302 "{\"name\":\"e2e-members-mail\",\"target\":\"mailto:ops@compose.invalid\",$types}"
echo "ok  webhook and mail subscriptions on member events created"

# 1. host-2 killed, started again, then frozen and thawed. A restarted
# host joins again as a new life of itself (member.joined, "joined the
# cluster"); member.alive ("is up again") is what a failed member that
# comes back without restarting gets, like a frozen machine or a healed
# partition, which `docker pause` / `unpause` plays.
ev() { echo ".path == \"/members\" and .body.type == \"member.$1\" and .body.uri == \"/members/host-2\""; }
mail() { echo "(.subject | test(\"host-2 $1\")) and (.to | index(\"ops@compose.invalid\"))"; }
# expect what webhooks mails event phrase: wait for the webhook and the
# mail, give a repeat time to show (a lease, 5s, and then some), and
# check there is exactly the number expected.
expect() {
	local what=$1 nh=$2 nm=$3 f m n
	f=$(ev "$4") m=$(mail "$5")
	wait_for "$nh member.$4 webhook(s) for host-2" 60 at_least hooks "$f" "$nh"
	wait_for "$nm '$5' mail(s)" 60 at_least mails "$m" "$nm"
	sleep 7
	n=$(hooks "$f"); [ "$n" = "$nh" ] || fail "$what: $n member.$4 webhooks for host-2, want $nh"
	n=$(hooks "$f and .signature_verified"); [ "$n" = "$nh" ] || fail "$what: a member.$4 webhook's signature does not verify"
	n=$(mails "$m"); [ "$n" = "$nm" ] || fail "$what: $n '$5' mails, want $nm"
	echo "ok  $what → member.$4 webhook (signature verified) and mail \"$(curl -fsS "$MAILS" | jq -r "[.[] | select($m)][-1].subject")\" ($nh and $nm in all, as expected)"
}
docker kill "$($COMPOSE ps -q host-2)" >/dev/null
expect "host-2 killed" 1 1 failed "is down"
$COMPOSE start host-2 >/dev/null
expect "host-2 started again" 1 1 joined "joined the cluster"
back() { local m; m=$(grpc 127.0.0.1:17001 hivemind.v1.Membership/ListMembers) && tr -d '\n ' <<<"$m" | grep -q '"name":"host-2"[^}]*}[^}]*"state":"MEMBER_STATE_ALIVE"'; }
wait_for "host-2 alive in the registry" 60 back
docker pause "$($COMPOSE ps -q host-2)" >/dev/null
expect "host-2 frozen" 2 2 failed "is down"
docker unpause "$($COMPOSE ps -q host-2)" >/dev/null
expect "host-2 thawed" 1 1 alive "is up again"

# 2. Exactly once with a notifier SIGKILLed mid-run.
subscribe 17302 "{\"name\":\"e2e-load\",\"target\":\"http://webhook-sink:8080/load\",\"prefix\":\"/app/e2e/\",\"secret\":\"$SECRET\"}"
# put_one i: Put /app/e2e/k<i>, retried while the control plane answers
# UNAVAILABLE (it fails fast while it has no quorum, which a loaded
# machine can cause for a moment); a retried Put that had committed after
# all is a second event for the key, counted below by event id.
put_one() {
	local try
	for try in $(seq 1 40); do
		"$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 10 \
			-d "{\"key\":\"/app/e2e/k$1\",\"value\":\"dg==\"}" 127.0.0.1:17001 hivemind.v1.ControlPlane/Put >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	echo "Put /app/e2e/k$1 failed 40 times" >&2
	return 1
}
export -f put_one
export GRPCURL HIVEMIND_CACERT HIVEMIND_TOKEN
put_range() { # from to: 4 at a time
	seq "$1" "$2" | xargs -P 4 -I{} bash -c 'put_one {}' || fail "a Put of /app/e2e/k$1..k$2 failed"
}
third=$((EVENTS / 3))
t0=$SECONDS
put_range 1 "$third"
docker kill "$($COMPOSE ps -q notifier-1)" >/dev/null
echo "    notifier-1 SIGKILLed after $third of $EVENTS Puts"
put_range $((third + 1)) $((2 * third))
$COMPOSE start notifier-1 >/dev/null
echo "    notifier-1 started again after $((2 * third)) Puts"
put_range $((2 * third + 1)) "$EVENTS"
echo "    $EVENTS Puts acknowledged in $((SECONDS - t0))s"

load='.path == "/load"'
distinct() { curl -fsS "$HOOKS" | jq "[.[] | select($load) | .body.uri] | unique | length"; }
all_in() { [ "$(distinct)" -ge "$EVENTS" ]; }
wait_for "$EVENTS distinct events at the webhook sink" 180 all_in
sleep 7
got=$(curl -fsS "$HOOKS")
total=$(jq "[.[] | select($load)] | length" <<<"$got")
keys=$(jq "[.[] | select($load) | .body.uri] | unique | length" <<<"$got")
events=$(jq "[.[] | select($load) | .body.event_id] | unique | length" <<<"$got")
ids=$(jq "[.[] | select($load) | .webhook_id] | unique | length" <<<"$got")
bad=$(jq "[.[] | select($load and (.signature_verified | not))] | length" <<<"$got")
repeated=$(jq -r "[.[] | select($load) | .webhook_id] | group_by(.) | map(select(length > 1) | \"\(.[0]) ×\(length)\") | join(\", \")" <<<"$got")
[ "$keys" = "$EVENTS" ] || fail "$keys of $EVENTS keys' events reached the sink"
[ "$ids" = "$events" ] || fail "$ids webhook-ids for $events events (one id per event and subscription expected)"
[ "$bad" = 0 ] || fail "$bad webhooks whose signature does not verify"
echo "ok  exactly once: all $EVENTS keys delivered ($events events, $((events - EVENTS)) of them from retried Puts), $total requests, $((total - ids)) repeated webhook-ids${repeated:+ ($repeated)}"

healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$($COMPOSE ps -q notifier-1)")" = healthy ]; }
wait_for "notifier-1 healthy again" 60 healthy
echo "ok  notifier-1 healthy again"
