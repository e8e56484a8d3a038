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
	"$BIN/$bin" --node-name "$name" --data-dir "$RUN_DIR/$name" --log-format "$LOG_FORMAT" "$@" \
		>"$RUN_DIR/$name.log" 2>&1 &
	pids+=($!)
}

for i in 1 2 3; do
	start "cp$i" hivemind-controlplane --grpc-addr "127.0.0.1:700$i" --metrics-addr "127.0.0.1:900$i" \
		--initial-cluster "$CLUSTER"
done
start host1     hivemind-host     --grpc-addr 127.0.0.1:7101 --metrics-addr 127.0.0.1:9101
start dns1      hivemind-dns      --grpc-addr 127.0.0.1:7201 --metrics-addr 127.0.0.1:9201
start notifier1 hivemind-notifier --grpc-addr 127.0.0.1:7301 --metrics-addr 127.0.0.1:9301

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

Try:
  bin/grpcurl -plaintext 127.0.0.1:7001 list
  bin/grpcurl -plaintext 127.0.0.1:7001 hivemind.v1.Node/Info
  bin/grpcurl -plaintext 127.0.0.1:7001 hivemind.v1.ControlPlane/Status

Ctrl-C stops the cluster.
INFO
wait -n "${pids[@]}" || true
echo "a process exited; see $RUN_DIR/*.log" >&2
