#!/usr/bin/env bash
# Control-plane faults in compose: kill the leader → writes succeed again
# within 3 s and no acknowledged write is lost; stop two of three → writes
# fail fast with the no-quorum error while stale reads answer; start them
# again → service resumes. Runs against the cluster test/e2e/run.sh started
# (TLS with the dev CA, the compose operator token).
set -euo pipefail
COMPOSE=${COMPOSE:-docker-compose}
GRPCURL=${GRPCURL:-bin/grpcurl}
HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
HIVEMIND_CACERT=${HIVEMIND_CACERT:-certs/ca.pem}
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 5 "$@"; }
declare -A port=([controlplane-1]=17001 [controlplane-2]=17002 [controlplane-3]=17003)

fail() { echo "FAIL: $*" >&2; exit 1; }
call() { # port method [json]
	local p=$1 m=$2 d=${3:-'{}'}
	grpc -d "$d" "127.0.0.1:$p" "hivemind.v1.ControlPlane/$m"
}
now_ms() { date +%s%3N; }
b64() { printf %s "$1" | base64; }

# put_until port key limit_ms what: retry a write until it succeeds or fail
# after limit_ms; prints how long it took.
put_until() {
	local p=$1 key=$2 limit=$3 what=$4 t0
	t0=$(now_ms)
	until call "$p" Put "{\"key\":\"$key\",\"value\":\"$(b64 x)\"}" >/dev/null 2>&1; do
		[ $(( $(now_ms) - t0 )) -lt "$limit" ] || fail "no write succeeded within $limit ms $what"
		sleep 0.05
	done
	echo $(( $(now_ms) - t0 ))
}

leader_of() { call "$1" Status | sed -n 's/.*"leaderName": "\([^"]*\)".*/\1/p'; }

# Wait for a leader everyone agrees on.
leader=""
for _ in $(seq 1 50); do
	leader=$(leader_of 17001 || true)
	[ -n "$leader" ] && break
	sleep 0.2
done
[ -n "$leader" ] || fail "no leader"
echo "leader is $leader"

acked=()
for i in $(seq 1 20); do
	call 17001 Put "{\"key\":\"/e2e/k$i\",\"value\":\"$(b64 v$i)\"}" >/dev/null && acked+=("/e2e/k$i")
done
[ ${#acked[@]} -eq 20 ] || fail "only ${#acked[@]} of 20 writes acknowledged before the fault"

survivor=""
for n in controlplane-1 controlplane-2 controlplane-3; do [ "$n" != "$leader" ] && survivor=$n && break; done
$COMPOSE kill "$leader" >/dev/null 2>&1
took=$(put_until "${port[$survivor]}" /e2e/after-kill 10000 "of killing the leader")
echo "writes resumed ${took} ms after killing the leader"
[ "$took" -le 3000 ] || fail "writes resumed after ${took} ms, want ≤ 3000"

got=$(call "${port[$survivor]}" Range '{"prefix":"/e2e/k"}')
for k in "${acked[@]}"; do
	grep -q "\"key\": \"$k\"" <<<"$got" || fail "acknowledged write $k lost"
done
echo "all ${#acked[@]} acknowledged writes present"

$COMPOSE start "$leader" >/dev/null 2>&1

# Stop two of three: the last one is degraded.
others=()
for n in controlplane-1 controlplane-2 controlplane-3; do [ "$n" != "$survivor" ] && others+=("$n"); done
$COMPOSE stop -t 5 "${others[@]}" >/dev/null 2>&1
p=${port[$survivor]}
# Give the survivor its election timeout to notice the loss of quorum.
for _ in $(seq 1 50); do
	call "$p" Status | grep -q '"degraded": true' && break
	sleep 0.2
done
t0=$(now_ms)
if out=$(grpc -d "{\"key\":\"/e2e/degraded\",\"value\":\"$(b64 x)\"}" "127.0.0.1:$p" hivemind.v1.ControlPlane/Put 2>&1); then
	fail "write succeeded without a quorum"
fi
took=$(( $(now_ms) - t0 ))
grep -q "Unavailable" <<<"$out" || fail "degraded write did not fail with UNAVAILABLE: $out"
grep -qi "quorum" <<<"$out" || fail "degraded write error does not mention the quorum: $out"
echo "degraded write failed in ${took} ms: $(tr '\n' ' ' <<<"$out")"
[ "$took" -lt 1500 ] || fail "degraded write took ${took} ms to fail (grpcurl start-up included), want < 1 s of server time"
stale=$(call "$p" Get '{"key":"/e2e/k1","stale":true}') || fail "stale read failed while degraded"
grep -q '"stale": true' <<<"$stale" || fail "stale read does not say it is stale: $stale"
grep -q "$(b64 v1)" <<<"$stale" || fail "stale read lost /e2e/k1: $stale"
echo "stale read answers while degraded"

$COMPOSE start "${others[@]}" >/dev/null 2>&1
took=$(put_until "$p" /e2e/recovered 30000 "of restarting the stopped nodes")
echo "service resumed ${took} ms after restarting the stopped nodes"
