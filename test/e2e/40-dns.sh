#!/usr/bin/env bash
# Hosts to DNS in compose (issue 5): host-1's service answers from both dns
# processors; stopping the process its check watches takes it out of the
# answers; killing host-1 takes its records away after failure detection;
# with two of three control-plane nodes stopped, a changed address of host-2
# still reaches both processors (fast path), and once the control plane is
# back it holds the same record. Runs against the cluster test/e2e/run.sh
# started; needs dig (Debian: dnsutils).
set -euo pipefail
COMPOSE=${COMPOSE:-docker-compose}
GRPCURL=${GRPCURL:-bin/grpcurl}
HIVEMIND_TOKEN=${HIVEMIND_TOKEN:-hmo_dev-compose-operator-token}
HIVEMIND_CACERT=${HIVEMIND_CACERT:-certs/ca.pem}
grpc() { "$GRPCURL" -cacert "$HIVEMIND_CACERT" -H "authorization: bearer $HIVEMIND_TOKEN" -max-time 5 "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v dig >/dev/null || fail "dig is not installed (Debian: apt-get install dnsutils)"
q() { dig @127.0.0.1 -p "$1" +short +time=1 +tries=1 "$2" "${3:-A}" 2>/dev/null || true; }
wait_for() { # what limit_s cmd…
	local what=$1 limit=$2; shift 2
	local t0=$SECONDS
	until "$@"; do
		[ $((SECONDS - t0)) -lt "$limit" ] || fail "$what not within ${limit}s"
		sleep 0.5
	done
}
both() { # name type pattern: both processors answer matching pattern
	[[ "$(q 1053 "$1" "$2")" =~ $3 ]] && [[ "$(q 1054 "$1" "$2")" =~ $3 ]]
}
neither() { [ -z "$(q 1053 "$1" "$2")" ] && [ -z "$(q 1054 "$1" "$2")" ]; }
ip='^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+'

wait_for "web.service.hive from dns-1 and dns-2" 60 both web.service.hive A "$ip"
echo "ok  web.service.hive → $(q 1053 web.service.hive) from dns-1 and dns-2"
srv=$(q 1054 _web._tcp.service.hive SRV)
[[ "$srv" == *"8080 host-1.node.hive."* ]] || fail "SRV: $srv"
echo "ok  _web._tcp.service.hive SRV → $srv"

$COMPOSE stop web >/dev/null
wait_for "web out of the answers once its check fails" 30 neither web.service.hive A
echo "ok  web container stopped → web.service.hive gone from both"
$COMPOSE start web >/dev/null
wait_for "web back in the answers" 30 both web.service.hive A "$ip"
echo "ok  web container started → web.service.hive back"

t0=$(date +%s%3N)
docker kill "$($COMPOSE ps -q host-1)" >/dev/null
wait_for "host-1's records gone after failure detection" 30 neither host-1.node.hive A
echo "ok  host-1 killed → its records gone after $(( $(date +%s%3N) - t0 )) ms"
$COMPOSE start host-1 >/dev/null
wait_for "host-1 answered again" 60 both host-1.node.hive A "$ip"
echo "ok  host-1 restarted → answered again"

# The control plane loses its quorum; host-2's address changes.
cfg=deploy/compose/host-2.yaml
restore() { sed 's/10\.99\.0\.3/10.99.0.2/' "$cfg" >"$cfg.tmp" && cat "$cfg.tmp" >"$cfg" && rm -f "$cfg.tmp"; }
trap restore EXIT
wait_for "host-2 at 10.99.0.2" 30 both host-2.node.hive A '^10\.99\.0\.2$'
$COMPOSE stop controlplane-2 controlplane-3 >/dev/null
# Rewrite in place: the file is bind-mounted, its inode must stay.
sed 's/10\.99\.0\.2/10.99.0.3/' "$cfg" >"$cfg.tmp" && cat "$cfg.tmp" >"$cfg" && rm -f "$cfg.tmp"
wait_for "both processors answering host-2's new address without a quorum" 30 both host-2.node.hive A '^10\.99\.0\.3$'
echo "ok  no quorum, host-2 moved to 10.99.0.3 → dns-1 and dns-2 answer it"
$COMPOSE start controlplane-2 controlplane-3 >/dev/null
holds() {
	local v
	v=$(grpc -d '{"key":"/nodes/host-2/host"}' 127.0.0.1:17001 hivemind.v1.ControlPlane/Get 2>/dev/null | grep -o '"value": "[^"]*"' | cut -d'"' -f4) || return 1
	[ -n "$v" ] && base64 -d <<<"$v" 2>/dev/null | grep -aq '10\.99\.0\.3'
}
wait_for "the control plane holding host-2's new address" 60 holds
echo "ok  control plane back → it holds host-2's record with 10.99.0.3"
restore
wait_for "host-2 back at 10.99.0.2" 30 both host-2.node.hive A '^10\.99\.0\.2$'
