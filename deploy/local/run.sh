#!/usr/bin/env bash
# A local hivemind cluster on loopback: 3 control-plane nodes, 1 host agent,
# 1 dns processor and 1 notifier, each a process with its data under .run/.
# Ctrl-C (or SIGTERM) stops every process this script started.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/bin}
RUN_DIR=${RUN_DIR:-$PWD/.run}
LOG_FORMAT=${LOG_FORMAT:-text}
mkdir -p "$RUN_DIR"

# The cluster secret and an operator token, made once and kept under
# $RUN_DIR (files, so they do not show in ps). Every node gets both.
SECRET_FILE=$RUN_DIR/cluster-secret
TOKEN_FILE=$RUN_DIR/operator-token
random() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }
( umask 077
  [ -s "$SECRET_FILE" ] || random >"$SECRET_FILE"
  [ -s "$TOKEN_FILE" ] || echo "hmo_$(random)" >"$TOKEN_FILE"
  echo "ops=$(cat "$TOKEN_FILE"):read,write,admin,filter" >"$RUN_DIR/api-tokens" )

CLUSTER="cp1=127.0.0.1:7001,cp2=127.0.0.1:7002,cp3=127.0.0.1:7003"
pids=()

stop() {
	trap - INT TERM EXIT
	echo
	echo "stopping ${#pids[@]} processes…"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
	echo "stopped."
}
trap stop INT TERM EXIT

start() { # name binary args…
	local name=$1 bin=$2; shift 2
	mkdir -p "$RUN_DIR/$name"
	"$BIN/$bin" --node-name "$name" --data-dir "$RUN_DIR/$name" --log-format "$LOG_FORMAT" \
		--cluster-secret-file "$SECRET_FILE" --api-tokens-file "$RUN_DIR/api-tokens" "$@" \
		>"$RUN_DIR/$name.log" 2>&1 &
	pids+=($!)
}

for i in 1 2 3; do
	start "cp$i" hivemind-controlplane --grpc-addr "127.0.0.1:700$i" --metrics-addr "127.0.0.1:900$i" \
		--gossip-addr "127.0.0.1:740$i" --initial-cluster "$CLUSTER"
done
# Any member can be a seed: the host joins through the control plane, the
# others (also) through the host, which forwards their joins.
start host1     hivemind-host     --grpc-addr 127.0.0.1:7101 --metrics-addr 127.0.0.1:9101 \
	--gossip-addr 127.0.0.1:7411 --seeds 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
	--config deploy/local/host1.yaml --include-loopback
start dns1      hivemind-dns      --grpc-addr 127.0.0.1:7201 --metrics-addr 127.0.0.1:9201 \
	--gossip-addr 127.0.0.1:7421 --seeds 127.0.0.1:7101,127.0.0.1:7002 --dns-addr 127.0.0.1:8053
start notifier1 hivemind-notifier --grpc-addr 127.0.0.1:7301 --metrics-addr 127.0.0.1:9301 \
	--gossip-addr 127.0.0.1:7431 --seeds 127.0.0.1:7201,127.0.0.1:7003 \
	--egress-allow-loopback --lease 10s

endpoints=(cp1:127.0.0.1:7001 cp2:127.0.0.1:7002 cp3:127.0.0.1:7003 host1:127.0.0.1:7101 dns1:127.0.0.1:7201 notifier1:127.0.0.1:7301)

# Wait until every node's health service says SERVING (or a process died).
deadline=$((SECONDS + 30))
for ep in "${endpoints[@]}"; do
	name=${ep%%:*} addr=${ep#*:}
	bin=hivemind-controlplane
	case $name in host*) bin=hivemind-host ;; dns*) bin=hivemind-dns ;; notifier*) bin=hivemind-notifier ;; esac
	until "$BIN/$bin" healthcheck --grpc-addr "$addr" --timeout 1s 2>/dev/null; do
		for p in "${pids[@]}"; do
			kill -0 "$p" 2>/dev/null || { echo "a process exited; logs in $RUN_DIR/*.log" >&2; tail -n 20 "$RUN_DIR"/*.log >&2; exit 1; }
		done
		[ $SECONDS -lt $deadline ] || { echo "$name ($addr) not healthy after 30s; see $RUN_DIR/$name.log" >&2; exit 1; }
		sleep 0.2
	done
done

cat <<INFO

hivemind is running (data and logs under $RUN_DIR):

  node        gRPC              metrics
  cp1         127.0.0.1:7001    http://127.0.0.1:9001/metrics
  cp2         127.0.0.1:7002    http://127.0.0.1:9002/metrics
  cp3         127.0.0.1:7003    http://127.0.0.1:9003/metrics
  host1       127.0.0.1:7101    http://127.0.0.1:9101/metrics
  dns1        127.0.0.1:7201    http://127.0.0.1:9201/metrics
  notifier1   127.0.0.1:7301    http://127.0.0.1:9301/metrics

Every call but health needs a token. The operator token (scopes read, write,
admin, filter) is in $TOKEN_FILE:

  export HIVEMIND_TOKEN=$(cat "$TOKEN_FILE")

Try:
  bin/grpcurl -plaintext -H "authorization: bearer \$HIVEMIND_TOKEN" 127.0.0.1:7001 list
  bin/grpcurl -plaintext -H "authorization: bearer \$HIVEMIND_TOKEN" 127.0.0.1:7001 hivemind.v1.Node/Info
  bin/grpcurl -plaintext -H "authorization: bearer \$HIVEMIND_TOKEN" 127.0.0.1:7001 hivemind.v1.ControlPlane/Status
  bin/grpcurl -plaintext -H "authorization: bearer \$HIVEMIND_TOKEN" 127.0.0.1:7101 hivemind.v1.Membership/ListMembers
  dig @127.0.0.1 -p 8053 host1.node.hive A          (DNS from dns1, see docs/dns.md)

Ctrl-C stops the cluster.
INFO
wait -n "${pids[@]}" || true
echo "a process exited; see $RUN_DIR/*.log" >&2
