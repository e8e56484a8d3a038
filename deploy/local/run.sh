#!/usr/bin/env bash
# A local hivemind cluster on loopback: 3 control-plane nodes, 1 host agent,
# 1 dns processor and 1 notifier, each a process with its data under .run/.
# Ctrl-C (or SIGTERM) stops every process of the cluster. When one process
# exits, the others keep running and the script says which one went;
#
#   deploy/local/run.sh restart NAME
#
# (from another terminal) starts that node again on its data directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/bin}
RUN_DIR=${RUN_DIR:-$PWD/.run}
LOG_FORMAT=${LOG_FORMAT:-text}
mkdir -p "$RUN_DIR"

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$RUN_DIR/$1.pid" 2>/dev/null || true; }

if [ "${1:-}" = restart ]; then
	if [ -z "${2:-}" ]; then
		echo "usage: deploy/local/run.sh restart NAME, NAME one of: $(cd "$RUN_DIR" 2>/dev/null && ls -- *.cmd 2>/dev/null | sed 's/\.cmd$//' | tr '\n' ' ')" >&2
		exit 2
	fi
	name=$2
	alive "$(cat "$RUN_DIR/run.pid" 2>/dev/null)" || { echo "no cluster is running from $RUN_DIR (start it with make run)" >&2; exit 1; }
	[ -f "$RUN_DIR/$name.cmd" ] || { echo "no node $name in $RUN_DIR" >&2; exit 1; }
	if alive "$(pid_of "$name")"; then echo "$name is running (pid $(pid_of "$name"))" >&2; exit 1; fi
	# The command line the cluster started it with, on the same data.
	eval "set -- $(cat "$RUN_DIR/$name.cmd")"
	"$@" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN_DIR/$name.pid"
	echo "$name started again (pid $!); log in $RUN_DIR/$name.log"
	exit 0
fi

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
if alive "$(cat "$RUN_DIR/run.pid" 2>/dev/null)"; then
	echo "a cluster is already running from $RUN_DIR (pid $(cat "$RUN_DIR/run.pid"))" >&2
	exit 1
fi
echo $$ >"$RUN_DIR/run.pid"
names=()

# Every node's pid is in $RUN_DIR/NAME.pid, so a node restarted from
# another terminal is stopped with the others.
stop() {
	trap - INT TERM EXIT
	local pids=() n p
	for n in "${names[@]}"; do p=$(pid_of "$n"); alive "$p" && pids+=("$p"); done
	echo
	echo "stopping ${#pids[@]} processes…"
	[ ${#pids[@]} -eq 0 ] || kill -TERM "${pids[@]}" 2>/dev/null || true
	# A graceful stop takes at most --shutdown-timeout (10 s); one that
	# hangs beyond 30 s is killed, so Ctrl-C always ends the cluster.
	local deadline=$((SECONDS + 30))
	for p in "${pids[@]}"; do
		while alive "$p"; do
			if [ $SECONDS -ge $deadline ]; then
				echo "pid $p did not stop within 30 s; killing it" >&2
				kill -KILL "$p" 2>/dev/null || true
				break
			fi
			sleep 0.1
		done
	done
	rm -f "$RUN_DIR/run.pid" "$RUN_DIR"/*.pid
	echo "stopped."
	exit 0
}
trap stop INT TERM EXIT

start() { # name binary args…
	local name=$1 bin=$2; shift 2
	mkdir -p "$RUN_DIR/$name"
	local cmd=("$BIN/$bin" --node-name "$name" --data-dir "$RUN_DIR/$name" --log-format "$LOG_FORMAT"
		--cluster-secret-file "$SECRET_FILE" --api-tokens-file "$RUN_DIR/api-tokens" "$@")
	printf '%q ' "${cmd[@]}" >"$RUN_DIR/$name.cmd"
	"${cmd[@]}" >"$RUN_DIR/$name.log" 2>&1 &
	echo $! >"$RUN_DIR/$name.pid"
	names+=("$name")
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
		for n in "${names[@]}"; do
			alive "$(pid_of "$n")" || { echo "$n exited while starting; logs in $RUN_DIR/*.log" >&2; tail -n 20 "$RUN_DIR/$n.log" >&2; exit 1; }
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

Kill a node (the leader, say) and watch the others carry on; start it again
with deploy/local/run.sh restart NAME. Ctrl-C stops the cluster.
INFO

# Watch the nodes: say when one goes and when it is back.
declare -A gone=()
while true; do
	for n in "${names[@]}"; do
		p=$(pid_of "$n")
		if alive "$p"; then
			if [ -n "${gone[$n]:-}" ]; then
				echo "$(date +%T) $n is running again (pid $p)"
				unset "gone[$n]"
			fi
		elif [ -z "${gone[$n]:-}" ]; then
			gone[$n]=1
			echo "$(date +%T) $n (pid $p) exited; the other nodes keep running. Last lines of $RUN_DIR/$n.log:" >&2
			tail -n 3 "$RUN_DIR/$n.log" | sed 's/^/    /' >&2
			echo "    start it again: deploy/local/run.sh restart $n" >&2
		fi
	done
	sleep 1
done
