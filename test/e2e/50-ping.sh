#!/usr/bin/env bash
# Ping requests in compose: every node measures a target and answers; a
# probe answers with data; coordinates give an estimate. The calls of
# docs/ping.md, against the published ports with TLS.
set -euo pipefail
GRPCURL=${GRPCURL:-bin/grpcurl}
HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
HIVEMIND_CACERT=${HIVEMIND_CACERT:-certs/ca.pem}
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 10 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$(grpc -d '{"target":"controlplane-1","count":3}' 127.0.0.1:17101 hivemind.v1.Node/PingRequest) || fail "PingRequest: $out"
answered=$(grep -c '"received": 3' <<<"$out" || true)
[ "$answered" -ge 7 ] || fail "PingRequest: $answered of 8 members measured 3 of 3 pings: $out"
grep -q '"timedOut": true' <<<"$out" && fail "PingRequest: a member timed out: $out"
echo "ok  PingRequest through host-1: $answered members measured controlplane-1"

out=$(grpc -d '{"name":"version"}' 127.0.0.1:17201 hivemind.v1.Node/Probe) || fail "Probe: $out"
grep -q '"probe": "version"' <<<"$out" || fail "Probe version: $out"
echo "ok  Probe version on dns-1"

out=$(grpc -d '{"target":"controlplane-2","probe":"time"}' 127.0.0.1:17301 hivemind.v1.Node/ProbeRequest) || fail "ProbeRequest: $out"
grep -q 'offset' <<<"$out" || fail "ProbeRequest time: no offset: $out"
echo "ok  ProbeRequest time through notifier-1"

est() { grpc -d '{"a":"host-1","b":"dns-2"}' 127.0.0.1:17001 hivemind.v1.Node/EstimateRTT 2>&1; }
t0=$SECONDS
until out=$(est) && grep -q '"rtt"' <<<"$out"; do
	[ $((SECONDS - t0)) -lt 30 ] || fail "EstimateRTT: $out"
	sleep 1
done
echo "ok  EstimateRTT host-1 → dns-2: $(grep -o '"rtt": "[^"]*"' <<<"$out" | head -1)"
