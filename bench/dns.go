package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// dnsPrefill lists the zone sizes dns.propagation is measured at, one row
// each, in the same run: the per-change cost of a dns processor must not
// grow with the fleet.
var dnsPrefill = flag.String("dns-prefill", "0,100,10000", "dns suite: comma-separated numbers of hosts written before dns.propagation is measured (one row each; the dns.qps zone's records)")

// benchDNSPropagation measures dns.propagation once per size of -dns-prefill.
func benchDNSPropagation(ctx context.Context, dir, binDir string, changes, rate int) ([]result, error) {
	var out []result
	for _, f := range strings.Split(*dnsPrefill, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-dns-prefill %q: %q is not a number of hosts", *dnsPrefill, f)
		}
		rs, err := dnsPropagation(ctx, filepath.Join(dir, fmt.Sprintf("dns-propagation-%d", n)), binDir, changes, rate, n)
		if err != nil {
			return nil, fmt.Errorf("%d prefilled hosts: %w", n, err)
		}
		out = append(out, rs...)
	}
	return out, nil
}

// dnsPropagation measures dns.propagation: a 3-node control plane and two
// dns processors; the benchmark writes prefill host records (those of the
// dns.qps zone), then plays a host that changes its address `changes` times
// at `rate` per second, each change sent both ways as the host agent sends
// it (PushHosts to both processors, Put on the control plane). One resolver
// loop per processor asks for the host's address back to back; a change
// has propagated when every processor answers it or a later one. The
// address encodes the record's seq. With a prefill it also measures a
// third dns processor started on the full zone (dns.bootstrap) and the
// processors' memory per host.
func dnsPropagation(ctx context.Context, dir, binDir string, changes, rate, prefill int) ([]result, error) {
	p, eps, err := startHivemind(dir, binDir)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	ports, err := freePorts(12)
	if err != nil {
		return nil, err
	}
	dnsProcs := &procs{dir: p.dir} // apart, for their CPU and memory
	defer dnsProcs.stop()
	var dnsAddrs, grpcAddrs, metricsAddrs []string
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("dns%d", i+1)
		grpcAddr, dnsAddr, metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[4*i]), fmt.Sprintf("127.0.0.1:%d", ports[4*i+1]), fmt.Sprintf("127.0.0.1:%d", ports[4*i+3])
		if err := startDNSProcessor(dnsProcs, binDir, name, grpcAddr, dnsAddr, metricsAddr, fmt.Sprintf("127.0.0.1:%d", ports[4*i+2]), eps); err != nil {
			return nil, err
		}
		dnsAddrs, grpcAddrs, metricsAddrs = append(dnsAddrs, dnsAddr), append(grpcAddrs, grpcAddr), append(metricsAddrs, metricsAddr)
	}
	cp, err := cpclient.New(cpclient.Config{Endpoints: eps, Dial: dialConfig()})
	if err != nil {
		return nil, err
	}
	defer cp.Close()
	const host = "bench-host"
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for _, a := range dnsAddrs {
		if err := waitUntil(wctx, "dns processor "+a+" bootstrapped", func(context.Context) error {
			r, err := ask(a, "hive.", dns.TypeSOA)
			if err == nil && r.Rcode != dns.RcodeSuccess {
				err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
			}
			return err
		}); err != nil {
			return nil, err
		}
	}
	_ = cp.FindLeader(ctx)
	var out []result
	if prefill > 0 {
		rs, err := dnsPrefillZone(ctx, p, dnsProcs, cp, binDir, eps, grpcAddrs, metricsAddrs, ports[8:12], prefill)
		if err != nil {
			return nil, err
		}
		out = append(out, rs...)
	}
	cpuBefore := dnsProcs.cpu()

	var streams []hivemindv1.DNSProcessor_PushHostsClient
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	fast := true
	for _, a := range grpcAddrs {
		conn, err := grpcclient.Dial(a, dialConfig())
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		c := hivemindv1.NewDNSProcessorClient(conn)
		// PushHosts admits host nodes only, each for its own record; the
		// bench holds an operator token. An empty stream tells whether it
		// is let in, so a refused fast path is said once, not counted as
		// an error per change.
		probe, err := c.PushHosts(sctx)
		if err == nil {
			_, err = probe.CloseAndRecv()
		}
		if status.Code(err) == codes.PermissionDenied {
			fast = false
			break
		}
		if err != nil {
			return nil, err
		}
		s, err := c.PushHosts(sctx)
		if err != nil {
			return nil, err
		}
		streams = append(streams, s)
	}
	if !fast {
		streams = nil
		fmt.Fprintln(os.Stderr, "dns propagation: PushHosts refused to the bench's operator token; measuring the durable path alone")
	}

	sent := make([]time.Time, changes+1)
	seen := make([][]time.Time, len(dnsAddrs)) // per processor: when seq was first answered
	for i := range seen {
		seen[i] = make([]time.Time, changes+1)
	}
	var mu sync.Mutex
	done := make(chan struct{})
	var resolvers sync.WaitGroup
	for i, a := range dnsAddrs {
		resolvers.Add(1)
		go func() {
			defer resolvers.Done()
			var high uint64
			for {
				select {
				case <-done:
					return
				default:
				}
				r, err := ask(a, host+".node.hive.", dns.TypeA)
				now := time.Now()
				if err != nil || len(r.Answer) == 0 {
					continue
				}
				a, ok := r.Answer[0].(*dns.A)
				if !ok {
					continue
				}
				seq := seqOf(a)
				if seq <= high || seq > uint64(changes) {
					continue
				}
				mu.Lock()
				for s := high + 1; s <= seq; s++ {
					seen[i][s] = now
				}
				mu.Unlock()
				high = seq
			}
		}()
	}

	var errs int64
	var firstErr error
	var puts sync.WaitGroup
	var errMu sync.Mutex
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		errs++
		if firstErr == nil {
			firstErr = err
		}
	}
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	for seq := 1; seq <= changes; seq++ {
		<-tick.C
		rec := &hivemindv1.HostRecord{
			Node: host, Addresses: []string{addrOf(uint64(seq)).String()},
			Seq: uint64(seq), Hlc: uint64(time.Now().UnixMilli()) << 16,
		}
		mu.Lock()
		sent[seq] = time.Now()
		mu.Unlock()
		for _, s := range streams {
			if err := s.Send(&hivemindv1.PushHostsRequest{Host: rec}); err != nil {
				fail(fmt.Errorf("push: %w", err))
			}
		}
		value, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
		puts.Add(1)
		go func() {
			defer puts.Done()
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := cp.Put(pctx, &hivemindv1.PutRequest{Key: "/nodes/" + host + "/host", Value: value, Hlc: rec.Hlc}); err != nil {
				fail(fmt.Errorf("put: %w", err))
			}
		}()
	}
	elapsed := time.Since(start)
	puts.Wait()
	cpu := dnsProcs.cpu() - cpuBefore
	// Wait (bounded) for the last change to reach every processor.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		all := true
		for i := range seen {
			all = all && !seen[i][changes].IsZero()
		}
		mu.Unlock()
		if all {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(done)
	resolvers.Wait()
	for _, s := range streams {
		if _, err := s.CloseAndRecv(); err != nil {
			fail(fmt.Errorf("push stream: %w", err))
		}
	}

	var lat []time.Duration
	missing := 0
	for seq := 1; seq <= changes; seq++ {
		var last time.Time
		for i := range seen {
			if seen[i][seq].IsZero() {
				last = time.Time{}
				break
			}
			if seen[i][seq].After(last) {
				last = seen[i][seq]
			}
		}
		if last.IsZero() {
			missing++
			continue
		}
		lat = append(lat, max(0, last.Sub(sent[seq])))
	}
	r := summarize(lat)
	r.Name, r.System, r.Clients = "dns.propagation", "hivemind", len(dnsAddrs)
	r.Seconds = elapsed.Seconds()
	r.OpsPerSec = float64(changes) / elapsed.Seconds()
	r.Errors = errs + int64(missing)
	r.ServerCPUusPerOp = float64(cpu.Microseconds()) / float64(changes)
	paths := "fast path + durable path"
	if !fast {
		paths = "durable path only (PushHosts admits host nodes only; the bench has an operator token)"
	}
	r.Note = fmt.Sprintf("%d prefilled hosts; %d changes at %d/s, %s, until both dns processors answer; server CPU: the 2 dns processors' per change, answering the 2 resolver loops' queries included",
		prefill, changes, rate, paths)
	if firstErr != nil {
		r.Note += "; first error: " + firstErr.Error()
	}
	if missing > 0 {
		r.Note += fmt.Sprintf("; %d changes never answered by every processor", missing)
	}
	fmt.Fprintf(os.Stderr, "dns propagation (%d prefilled hosts): p50 %.2fms p99 %.2fms max %.2fms (%d changes), dns processors %.0f µs CPU per change\n",
		prefill, r.P50ms, r.P99ms, r.MaxMs, len(lat), r.ServerCPUusPerOp)
	return append(out, r), nil
}

// startDNSProcessor starts one dns processor joined to the control plane
// at eps, with the bench's secret and tokens.
func startDNSProcessor(p *procs, binDir, name, grpcAddr, dnsAddr, metricsAddr, gossipAddr string, eps []string) error {
	return p.start("hivemind-"+name, filepath.Join(binDir, "hivemind-dns"),
		"--node-name", name, "--grpc-addr", grpcAddr, "--dns-addr", dnsAddr, "--metrics-addr", metricsAddr,
		"--gossip-addr", gossipAddr, "--seeds", strings.Join(eps, ","),
		"--data-dir", filepath.Join(p.dir, name), "--log-level", "warn",
		"--cluster-secret-file", filepath.Join(p.dir, "cluster-secret"), "--api-tokens-file", filepath.Join(p.dir, "api-tokens"))
}

// dnsPrefillZone writes n host records (the dns.qps zone's) and waits until
// both running processors serve them all, measuring their memory before
// and after; then it starts a third processor on the full zone and times
// how long it takes to serve every host (dns.bootstrap), and stops it.
func dnsPrefillZone(ctx context.Context, cluster, dnsProcs *procs, cp *cpclient.Client, binDir string, eps, grpcAddrs, metricsAddrs []string, ports []int, n int) ([]result, error) {
	z := newQPSZone(n)
	before := make([]memUse, len(metricsAddrs))
	for i, a := range metricsAddrs {
		before[i] = memOf(dnsProcs.cmds[i].Process.Pid, a)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := putHosts(wctx, cp, z); err != nil {
		return nil, err
	}
	written := time.Since(start)
	for _, a := range grpcAddrs {
		if err := waitServed(wctx, a, n); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "dns prefill: %d hosts written in %.1fs, served by both processors after %.1fs\n", n, written.Seconds(), time.Since(start).Seconds())
	var mem []string
	for i, a := range metricsAddrs {
		after := memOf(dnsProcs.cmds[i].Process.Pid, a)
		mem = append(mem, fmt.Sprintf("dns%d heap %+.0f B/host, RSS %+.0f B/host (heap %.1f→%.1f MiB, RSS %.1f→%.1f MiB)", i+1,
			float64(after.heap-before[i].heap)/float64(n), float64(after.rss-before[i].rss)/float64(n),
			mib(before[i].heap), mib(after.heap), mib(before[i].rss), mib(after.rss)))
	}
	fmt.Fprintf(os.Stderr, "dns memory at %d hosts: %s\n", n, strings.Join(mem, "; "))

	// A fresh processor: from its start until it answers for the last host
	// written. Its bootstrap is one consistent read applied at once, so
	// the first host it serves comes with all the others; a sample of them
	// is checked.
	fresh := &procs{dir: cluster.dir}
	defer fresh.stop()
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	start = time.Now()
	if err := startDNSProcessor(fresh, binDir, "dns3", fmt.Sprintf("127.0.0.1:%d", ports[0]), dnsAddr, fmt.Sprintf("127.0.0.1:%d", ports[3]), fmt.Sprintf("127.0.0.1:%d", ports[2]), eps); err != nil {
		return nil, err
	}
	last := hostName(n-1) + ".node." + qpsOrigin
	fctx, stopWaiting := context.WithCancel(wctx)
	defer stopWaiting()
	if err := waitUntil(fctx, "fresh dns processor serves "+last, func(context.Context) error {
		if exited(fresh.cmds[0].Process.Pid) {
			// A port taken between freePorts and its start, say: no use
			// waiting out the deadline.
			stopWaiting()
			return fmt.Errorf("dns3 exited (log: %s)", filepath.Join(cluster.dir, "hivemind-dns3.log"))
		}
		r, _, err := (&dns.Client{Timeout: 100 * time.Millisecond}).Exchange(question(last, dns.TypeA), dnsAddr)
		if err == nil && (r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0) {
			err = fmt.Errorf("rcode %s, %d answers", dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		return err
	}); err != nil {
		return nil, err
	}
	took := time.Since(start)
	for i := 0; i < n; i += max(1, n/100) {
		r, err := ask(dnsAddr, hostName(i)+".node."+qpsOrigin, dns.TypeA)
		if err != nil || len(r.Answer) != 1 {
			return nil, fmt.Errorf("fresh dns processor answered %s with %v (%v) after serving %s", hostName(i), r, err, last)
		}
	}
	fmt.Fprintf(os.Stderr, "dns bootstrap: a fresh dns processor served all %d hosts %.2fs after its start\n", n, took.Seconds())
	boot := result{Name: "dns.bootstrap", System: "hivemind", Clients: 1, Ops: 1, Seconds: took.Seconds(), MaxMs: float64(took.Milliseconds()),
		Note: fmt.Sprintf("%d prefilled hosts; a dns processor started on the full zone, from process start until it answers for every host (bootstrap from the control plane); memory of the 2 running processors: %s",
			n, strings.Join(mem, "; "))}
	return []result{boot}, nil
}

// exited reports whether the process pid has ended (a zombie until its
// parent waits for it, which procs.stop does).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

// waitServed waits until the dns processor at grpcAddr serves n hosts or
// more (its Status).
func waitServed(ctx context.Context, grpcAddr string, n int) error {
	conn, err := grpcclient.Dial(grpcAddr, dialConfig())
	if err != nil {
		return err
	}
	defer conn.Close()
	c := hivemindv1.NewDNSProcessorClient(conn)
	return waitUntil(ctx, fmt.Sprintf("dns processor %s serves %d hosts", grpcAddr, n), func(ctx context.Context) error {
		st, err := c.Status(ctx, &hivemindv1.DNSProcessorStatusRequest{})
		if err == nil && int(st.GetHosts()) < n {
			err = fmt.Errorf("%d hosts served", st.GetHosts())
		}
		return err
	})
}

// memUse is a process's resident set and its Go heap after a collection.
type memUse struct{ rss, heap int64 }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// memOf reads the RSS of pid from /proc and, from the process's metrics
// port, its live heap: a heap profile with gc=1 collects first, then
// go_memstats_heap_alloc_bytes. Zero where a figure cannot be read.
func memOf(pid int, metricsAddr string) memUse {
	var m memUse
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				m.rss = kb << 10
			}
		}
	}
	get := func(path string) string {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	get("/debug/pprof/heap?gc=1")
	for _, line := range strings.Split(get("/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_alloc_bytes "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			m.heap = int64(f)
		}
	}
	return m
}

func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// addrOf encodes a seq in an address of 10.0.0.0/8.
func addrOf(seq uint64) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(seq >> 16), byte(seq >> 8), byte(seq)})
}

func seqOf(a *dns.A) uint64 {
	ip := a.A.To4()
	return uint64(ip[1])<<16 | uint64(ip[2])<<8 | uint64(ip[3])
}

// ask sends one UDP query.
func ask(addr, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	r, _, err := (&dns.Client{Timeout: time.Second}).Exchange(m, addr)
	return r, err
}
