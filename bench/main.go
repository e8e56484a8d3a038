// Command hivemind-bench measures the control plane on loopback and, when an
// etcd binary is on PATH, a 3-node etcd driven by the same load generator in
// the same run. It prints a markdown table and appends one JSON object per
// result to the output file.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

func main() {
	out := flag.String("out", "bench/out/results.jsonl", "JSON Lines file results are appended to")
	binDir := flag.String("bin", "bin", "directory holding hivemind-controlplane")
	clientsFlag := flag.String("clients", "1,64,1000", "comma-separated concurrent client counts")
	dur := flag.Duration("duration", 10*time.Second, "how long each load step runs")
	watchers := flag.Int("watchers", 1000, "watchers in the watch fan-out step")
	fanoutEvents := flag.Int("fanout-events", 200, "events appended during the fan-out step")
	payloadSize := flag.Int("payload", 256, "payload / value size in bytes")
	etcdBin := flag.String("etcd", "etcd", "etcd binary; skipped when not found")
	endpoints := flag.String("endpoints", "", "drive this running control plane (comma-separated gRPC addresses) instead of starting one")
	flag.StringVar(&apiToken, "token", os.Getenv("HIVEMIND_TOKEN"), "operator API token (read, write) for -endpoints; default $HIVEMIND_TOKEN")
	suite := flag.String("suite", "controlplane", "what to measure: controlplane, membership (failure detection: kill → member.failed in the registry), dns (propagation to 2 dns processors, then dns.qps), dnsqps (dns.qps alone: dnsperf against a dns processor and NSD), snapshot (controlplane.snapshot: save and restore of a loaded cluster), notifier (event commit → webhook, 1 and 3 replicas) or fleet (3 control-plane members, 2 dns processors, 2 notifiers and -fleet-hosts simulated hosts: join storm, churn, restarts, outage, failure burst)")
	snapHosts := flag.Int("snapshot-hosts", 10000, "snapshot suite: host records in the state saved")
	snapEvents := flag.Int("snapshot-events", 100000, "snapshot suite: events appended to the state saved")
	dnsChanges := flag.Int("dns-changes", 1000, "dns suite: host record changes measured")
	dnsRate := flag.Int("dns-rate", 100, "dns suite: host record changes per second")
	members := flag.Int("members", 50, "membership suite: agents in the gossip pool")
	runs := flag.Int("runs", 20, "membership suite: kills measured per preset and load")
	systems := flag.String("systems", "", "membership suite: comma-separated presets to run (hivemind, memberlist-lan); empty runs all")
	flag.Float64Var(&opRate, "rate", 0, "cap each load step at this many operations per second (0: as fast as the clients go)")
	flag.IntVar(&serverProcs, "server-procs", 0, "GOMAXPROCS of each server started, hivemind and etcd alike (0: Go's default, the machine's cores)")
	rounds := flag.Int("rounds", 3, "controlplane suite: rounds of both systems, each on fresh clusters; the table gives the median")
	cpuProfile := flag.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
	flag.BoolVar(&unaryAppends, "unary-appends", false, "controlplane suite: make each hivemind append a call of its own (AppendEvent) instead of a message on the client's AppendEvents stream")
	fleetHosts := flag.Int("fleet-hosts", 10000, "fleet suite: simulated hosts")
	fleetChurn := flag.Duration("fleet-churn", 2*time.Minute, "fleet suite: how long the steady churn (100 record changes/s, 10 failures/min) runs")
	fleetProfile := flag.String("fleet-profile", "", "fleet suite: write a 30 s CPU profile of the first dns processor during churn to this file")
	flag.Parse()
	if *rounds < 1 {
		fatalf("-rounds %d: must be at least 1", *rounds)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fatalf("%v", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatalf("%v", err)
		}
		defer pprof.StopCPUProfile()
	}

	var counts []int
	for _, s := range strings.Split(*clientsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatalf("bad -clients %q", *clientsFlag)
		}
		counts = append(counts, n)
	}
	dir, err := os.MkdirTemp("", "hivemind-bench-")
	if err != nil {
		fatalf("%v", err)
	}
	if os.Getenv("HIVEMIND_BENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "keeping cluster data and logs in %s\n", dir)
	}
	if *suite == "dns" || *suite == "dnsqps" {
		absBin, _ := filepath.Abs(*binDir)
		var results []result
		if *suite == "dns" {
			results, err = benchDNSPropagation(context.Background(), dir, absBin, *dnsChanges, *dnsRate)
			if err != nil {
				fatalf("dns: %v", err)
			}
		}
		qps, err := benchDNSQPS(context.Background(), filepath.Join(dir, "dns-qps"), absBin)
		if err != nil {
			fatalf("dns.qps: %v", err)
		}
		results = append(results, qps...)
		printTable(results)
		if err := appendJSONL(*out, results); err != nil {
			fatalf("write %s: %v", *out, err)
		}
		return
	}
	if *suite == "snapshot" {
		results, err := benchSnapshot(context.Background(), filepath.Join(dir, "snapshot"), mustAbs(*binDir), *snapHosts, *snapEvents)
		if err != nil {
			fatalf("snapshot: %v", err)
		}
		printTable(results)
		if err := appendJSONL(*out, results); err != nil {
			fatalf("write %s: %v", *out, err)
		}
		return
	}
	if *suite == "fleet" {
		if *fleetHosts < 100 {
			fatalf("-fleet-hosts %d: must be at least 100 (one host per subscription group)", *fleetHosts)
		}
		if *fleetChurn < 10*time.Second {
			fatalf("-fleet-churn %s: must be at least 10s", *fleetChurn)
		}
		results, err := benchFleet(context.Background(), filepath.Join(dir, "fleet"), mustAbs(*binDir), fleetConfig{
			Hosts: *fleetHosts, Churn: *fleetChurn, ChurnRate: 100, FailPerMin: 10,
			Burst: min(1000, *fleetHosts), NotifyBurst: 100, Workers: 32, Profile: *fleetProfile,
		})
		printTable(results)
		if werr := appendJSONL(*out, results); werr != nil {
			fatalf("write %s: %v", *out, werr)
		}
		if err != nil {
			fatalf("fleet: %v", err)
		}
		return
	}
	if *suite == "notifier" {
		results, err := benchNotifier(filepath.Join(dir, "notifier"), mustAbs(*binDir), []int{1, 3}, *dur, 50, 2000)
		if err != nil {
			fatalf("notifier: %v", err)
		}
		printTable(results)
		if err := appendJSONL(*out, results); err != nil {
			fatalf("write %s: %v", *out, err)
		}
		return
	}
	if *suite == "membership" {
		only := map[string]bool{}
		for _, s := range strings.Split(*systems, ",") {
			if s = strings.TrimSpace(s); s != "" {
				only[s] = true
			}
		}
		absBin, _ := filepath.Abs(*binDir)
		results, err := benchMembership(dir, absBin, *members, *runs, only)
		if err != nil {
			fatalf("membership: %v", err)
		}
		printTable(results)
		if err := appendJSONL(*out, results); err != nil {
			fatalf("write %s: %v", *out, err)
		}
		return
	}
	ctx := context.Background()
	payload := bytes.Repeat([]byte("x"), *payloadSize)

	absBin, _ := filepath.Abs(*binDir)
	var eps []string
	if *endpoints != "" {
		eps = strings.Split(*endpoints, ",")
	}
	etcdPath, err := exec.LookPath(*etcdBin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcd not found on PATH (%v): etcd rows skipped\n", err)
		etcdPath = ""
	}
	// Both systems share the machine, whose speed drifts (fsync latency,
	// other tenants): each round starts fresh clusters of both, in
	// alternating order, and the table gives the median round.
	var perRound [][]result
	for round := 0; round < *rounds; round++ {
		hivemindRun := func() error {
			w := 0
			if round == *rounds-1 {
				w = *watchers // the fan-out step once, in the last round
			}
			hm, err := benchHivemind(ctx, filepath.Join(dir, fmt.Sprintf("hivemind-%d", round)), absBin, eps, counts, *dur, payload, w, *fanoutEvents)
			perRound = append(perRound, hm)
			return err
		}
		etcdRun := func() error {
			if etcdPath == "" {
				return nil
			}
			er, err := benchEtcd(ctx, filepath.Join(dir, fmt.Sprintf("etcd-%d", round)), etcdPath, counts, *dur, payload)
			perRound = append(perRound, er)
			return err
		}
		first, second := hivemindRun, etcdRun
		if round%2 == 1 {
			first, second = etcdRun, hivemindRun
		}
		if err := first(); err != nil {
			fatalf("round %d: %v", round+1, err)
		}
		if err := second(); err != nil {
			fatalf("round %d: %v", round+1, err)
		}
	}
	results := medianRounds(perRound)
	printRatios(results)

	printTable(results)
	if err := appendJSONL(*out, results); err != nil {
		fatalf("write %s: %v", *out, err)
	}
}

// apiToken authenticates the benchmark's clients: given with -token, or
// made for the cluster startHivemind starts.
var apiToken string

// unaryAppends: hivemind appends go as AppendEvent calls (-unary-appends).
var unaryAppends bool

func dialConfig() grpcclient.Config {
	return grpcclient.Config{Auth: auth.BearerToken(apiToken)}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "hivemind-bench: "+format+"\n", args...)
	os.Exit(1)
}

func benchHivemind(ctx context.Context, dir, binDir string, eps []string, counts []int, d time.Duration, payload []byte, watchers, fanoutEvents int) ([]result, error) {
	var servers *procs
	if eps == nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		p, started, err := startHivemind(dir, binDir)
		if err != nil {
			return nil, err
		}
		defer p.stop()
		eps, servers = started, p
	}
	cl, err := cpclient.New(cpclient.Config{Endpoints: eps, Dial: dialConfig(), UnaryAppends: unaryAppends})
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitUntil(wctx, "hivemind leader", func(c context.Context) error {
		_, err := cl.AppendEvent(c, &hivemindv1.AppendEventRequest{Type: "bench.ready", Uri: "/bench/ready"})
		return err
	}); err != nil {
		return nil, err
	}
	_ = cl.FindLeader(ctx)

	var out []result
	for _, n := range counts {
		r := measured(servers, func() result {
			return closedLoop(ctx, n, d, func(c context.Context) error {
				_, err := cl.AppendEvent(c, &hivemindv1.AppendEventRequest{Type: "bench.append", Uri: "/bench/append", Payload: payload})
				return err
			})
		})
		r.Name, r.System, r.Payload = "controlplane.append", "hivemind", len(payload)
		r.Note = "pkg/cpclient: appends share an AppendEvents stream"
		if unaryAppends {
			r.Note = "pkg/cpclient: one AppendEvent call per append"
		}
		fmt.Fprintf(os.Stderr, "hivemind append clients=%d: %.0f ops/s p99 %.1fms\n", n, r.OpsPerSec, r.P99ms)
		out = append(out, r)
	}
	if watchers > 0 {
		r, err := watchFanout(ctx, eps, cl, watchers, fanoutEvents, payload)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// watchFanout opens watchers spread over the endpoints, appends events that
// carry their send time, and measures the delay until each watcher has each
// event.
func watchFanout(ctx context.Context, eps []string, writer *cpclient.Client, watchers, events int, payload []byte) (result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	clients := make([]*cpclient.Client, len(eps))
	for i, ep := range eps {
		c, err := cpclient.New(cpclient.Config{Endpoints: []string{ep}, Dial: dialConfig()})
		if err != nil {
			return result{}, err
		}
		defer c.Close()
		clients[i] = c
	}
	var mu sync.Mutex
	var lat []time.Duration
	var ready, done sync.WaitGroup
	for i := 0; i < watchers; i++ {
		ready.Add(1)
		done.Add(1)
		go func(c *cpclient.Client) {
			defer done.Done()
			got, signalled := 0, false
			_ = c.Watch(ctx, &hivemindv1.WatchRequest{Prefix: "/bench/fanout"}, func(resp *hivemindv1.WatchResponse) error {
				if !signalled {
					signalled = true
					ready.Done()
				}
				now := time.Now()
				for _, e := range resp.GetEvents() {
					sent := time.Unix(0, int64(binary.BigEndian.Uint64(e.GetPayload())))
					mu.Lock()
					lat = append(lat, now.Sub(sent))
					mu.Unlock()
					got++
				}
				if got >= events {
					return errDone
				}
				return nil
			})
		}(clients[i%len(clients)])
	}
	ready.Wait()
	start := time.Now()
	buf := make([]byte, len(payload))
	copy(buf, payload)
	for i := 0; i < events; i++ {
		binary.BigEndian.PutUint64(buf, uint64(time.Now().UnixNano()))
		if _, err := writer.AppendEvent(ctx, &hivemindv1.AppendEventRequest{Type: "bench.fanout", Uri: "/bench/fanout", Payload: buf}); err != nil {
			return result{}, err
		}
		time.Sleep(10 * time.Millisecond) // a steady 100 events/s, not a burst
	}
	waitCh := make(chan struct{})
	go func() { done.Wait(); close(waitCh) }()
	select {
	case <-waitCh:
	case <-time.After(60 * time.Second):
		cancel()
		<-waitCh
	}
	elapsed := time.Since(start)
	r := summarize(lat)
	r.Name, r.System, r.Clients, r.Watchers, r.Payload = "controlplane.watch_fanout", "hivemind", 1, watchers, len(payload)
	r.Seconds = elapsed.Seconds()
	r.OpsPerSec = float64(len(lat)) / elapsed.Seconds()
	r.Note = fmt.Sprintf("latency from append to delivery; %d of %d deliveries", len(lat), watchers*events)
	fmt.Fprintf(os.Stderr, "hivemind watch fan-out watchers=%d: p50 %.1fms p99 %.1fms\n", watchers, r.P50ms, r.P99ms)
	return r, nil
}

var errDone = fmt.Errorf("done")

func benchEtcd(ctx context.Context, dir, bin string, counts []int, d time.Duration, payload []byte) ([]result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p, eps, err := startEtcd(dir, bin)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitUntil(wctx, "etcd leader", func(c context.Context) error {
		_, err := cli.Put(c, "/bench/ready", "1")
		return err
	}); err != nil {
		return nil, err
	}
	val := string(payload)
	var out []result
	for _, n := range counts {
		r := measured(p, func() result {
			return closedLoop(ctx, n, d, func(c context.Context) error {
				_, err := cli.Put(c, "/bench/append", val)
				return err
			})
		})
		r.Name, r.System, r.Payload = "controlplane.append", "etcd", len(payload)
		r.Note = "etcd put, same load generator"
		fmt.Fprintf(os.Stderr, "etcd put clients=%d: %.0f ops/s p99 %.1fms\n", n, r.OpsPerSec, r.P99ms)
		out = append(out, r)
	}
	return out, nil
}

func printTable(rs []result) {
	fmt.Println("| name | system | clients | ops/s | p50 ms | p99 ms | errors | CPU µs/op server + client | note |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rs {
		cpu := ""
		if r.ServerCPUusPerOp > 0 || r.ClientCPUusPerOp > 0 {
			cpu = fmt.Sprintf("%.0f + %.0f", r.ServerCPUusPerOp, r.ClientCPUusPerOp)
		}
		fmt.Printf("| %s | %s | %d | %.0f | %.2f | %.2f | %d | %s | %s |\n", r.Name, r.System, r.Clients, r.OpsPerSec, r.P50ms, r.P99ms, r.Errors, cpu, r.Note)
	}
}

func appendJSONL(path string, rs []result) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	enc := json.NewEncoder(f)
	now := time.Now().UTC().Format(time.RFC3339)
	for _, r := range rs {
		r.Time = now
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}
