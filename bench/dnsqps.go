package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Flags of the dns.qps step (suites dns and dnsqps).
var (
	dnsperfBin  = flag.String("dnsperf", "dnsperf", "dns.qps: dnsperf binary; the step is skipped when not found")
	dnsperfArgs = flag.String("dnsperf-args", "-c 4 -T 2 -l 10", "dns.qps: dnsperf arguments besides server, port and data file, the same for every server")
	nsdBin      = flag.String("nsd", "nsd", "dns.qps: NSD binary; its row is skipped when not found")
	nsdServers  = flag.Int("nsd-servers", runtime.NumCPU(), "dns.qps: NSD server-count (processes answering queries)")
	qpsHosts    = flag.Int("dns-hosts", 1000, "dns.qps: hosts in the zone")
	qpsProfile  = flag.String("dns-profile", "", "dns.qps: write a CPU profile of the dns processor, taken while dnsperf runs, to this file")
)

// benchDNSQPS measures dns.qps: dnsperf against one dns processor (behind a
// 3-process control plane holding the zone's HostRecords), then against
// NSD serving the same zone from a zone file, with the same query file and
// dnsperf arguments. Both answer every query the same way before either is
// measured.
func benchDNSQPS(ctx context.Context, dir, binDir string) ([]result, error) {
	perf, err := exec.LookPath(*dnsperfBin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dnsperf not found (%v): dns.qps skipped (apt-get install dnsperf nsd)\n", err)
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	z := newQPSZone(*qpsHosts)
	qs := z.queries()
	queryFile := filepath.Join(dir, "queries.txt")
	var lines strings.Builder
	for _, q := range qs {
		lines.WriteString(q.line() + "\n")
	}
	if err := os.WriteFile(queryFile, []byte(lines.String()), 0o644); err != nil {
		return nil, err
	}
	args := strings.Fields(*dnsperfArgs)
	note := fmt.Sprintf("dnsperf %s over UDP, %d hosts, %d-query file: %s", strings.Join(args, " "), z.hosts, len(qs), queryMix)

	hm, serial, answers, err := qpsHivemind(ctx, filepath.Join(dir, "hivemind"), binDir, perf, queryFile, args, z, qs)
	if err != nil {
		return nil, fmt.Errorf("hivemind: %w", err)
	}
	hm.Note = note + "; " + hm.Note
	out := []result{hm}

	nsd, err := exec.LookPath(*nsdBin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nsd not found (%v): dns.qps nsd row skipped\n", err)
		return out, nil
	}
	nr, err := qpsNSD(ctx, filepath.Join(dir, "nsd"), nsd, perf, queryFile, args, z, qs, serial, answers)
	if err != nil {
		return nil, fmt.Errorf("nsd: %w", err)
	}
	nr.Note = note + "; " + nr.Note
	if nr.OpsPerSec > 0 {
		out[0].Note += fmt.Sprintf("; %.2f× nsd", hm.OpsPerSec/nr.OpsPerSec)
	}
	return append(out, nr), nil
}

// qpsHivemind starts the control plane and one dns processor, writes the
// zone's HostRecords, waits until the processor answers every query, and
// runs dnsperf against it. It returns the zone's SOA serial and the
// answers, for the NSD side to match.
func qpsHivemind(ctx context.Context, dir, binDir, perf, queryFile string, args []string, z qpsZone, qs []qpsQuery) (result, uint32, []*dns.Msg, error) {
	p, eps, err := startHivemind(dir, binDir)
	if err != nil {
		return result{}, 0, nil, err
	}
	defer p.stop()
	ports, err := freePorts(4)
	if err != nil {
		return result{}, 0, nil, err
	}
	dnsAddr, metricsAddr := fmt.Sprintf("127.0.0.1:%d", ports[1]), fmt.Sprintf("127.0.0.1:%d", ports[3])
	err = p.start("hivemind-dns1", filepath.Join(binDir, "hivemind-dns"),
		"--node-name", "dns1", "--grpc-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]), "--dns-addr", dnsAddr,
		"--metrics-addr", metricsAddr, "--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2]),
		"--seeds", strings.Join(eps, ","), "--data-dir", filepath.Join(p.dir, "dns1"), "--log-level", "warn",
		"--cluster-secret-file", filepath.Join(p.dir, "cluster-secret"), "--api-tokens-file", filepath.Join(p.dir, "api-tokens"))
	if err != nil {
		return result{}, 0, nil, err
	}
	cp, err := cpclient.New(cpclient.Config{Endpoints: eps, Dial: dialConfig()})
	if err != nil {
		return result{}, 0, nil, err
	}
	defer cp.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := waitUntil(wctx, "control plane leader", func(c context.Context) error {
		_, err := cp.AppendEvent(c, &hivemindv1.AppendEventRequest{Type: "bench.ready", Uri: "/bench/ready"})
		return err
	}); err != nil {
		return result{}, 0, nil, err
	}
	if err := putHosts(wctx, cp, z); err != nil {
		return result{}, 0, nil, err
	}
	var answers []*dns.Msg
	if err := waitUntil(wctx, "dns processor answers every query", func(context.Context) error {
		answers, err = askAll(dnsAddr, qs)
		return err
	}); err != nil {
		return result{}, 0, nil, err
	}
	soa, err := ask(dnsAddr, qpsOrigin, dns.TypeSOA)
	if err != nil || len(soa.Answer) != 1 {
		return result{}, 0, nil, fmt.Errorf("SOA: %v %v", soa, err)
	}
	serial := soa.Answer[0].(*dns.SOA).Serial

	var prof sync.WaitGroup
	if *qpsProfile != "" {
		prof.Add(1)
		go func() {
			defer prof.Done()
			if err := cpuProfile(metricsAddr, *qpsProfile, dnsperfSeconds(args)); err != nil {
				fmt.Fprintf(os.Stderr, "dns processor profile: %v\n", err)
			}
		}()
	}
	st, err := runDNSPerf(ctx, perf, dnsAddr, queryFile, args)
	prof.Wait()
	if err != nil {
		return result{}, 0, nil, err
	}
	r := qpsResult("hivemind", st, args)
	r.Note = "1 dns processor process (3 control-plane processes idle beside it); " + r.Note
	fmt.Fprintf(os.Stderr, "dns.qps hivemind: %.0f queries/s, avg %.3fms\n", st.QPS, st.AvgMs)
	return r, serial, answers, nil
}

// putHosts writes every host's record to the control plane, as the host
// agents would.
func putHosts(ctx context.Context, cp *cpclient.Client, z qpsZone) error {
	const workers = 32
	errs := make(chan error, workers)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				rec := z.record(i, uint64(time.Now().UnixMilli())<<16)
				value, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
				if _, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: "/nodes/" + rec.Node + "/host", Value: value, Hlc: rec.Hlc}); err != nil {
					errs <- fmt.Errorf("put %s: %w", rec.Node, err)
					return
				}
			}
		}()
	}
	var err error
	for i := 0; i < z.hosts && err == nil; i++ {
		select {
		case next <- i:
		case err = <-errs:
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	if err != nil {
		return err
	}
	return <-errs
}

// askAll asks every query once and checks its rcode, AA and answer count.
func askAll(addr string, qs []qpsQuery) ([]*dns.Msg, error) {
	out := make([]*dns.Msg, len(qs))
	for i, q := range qs {
		r, err := ask(addr, q.name, q.qtype)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", q.line(), err)
		}
		if r.Rcode != q.rcode || len(r.Answer) != q.answers || !r.Authoritative {
			return nil, fmt.Errorf("%s: %s with %d answers (aa %v), want %s with %d",
				q.line(), dns.RcodeToString[r.Rcode], len(r.Answer), r.Authoritative, dns.RcodeToString[q.rcode], q.answers)
		}
		out[i] = r
	}
	return out, nil
}

// qpsNSD serves the zone from a zone file with NSD, checks it answers the
// same records as the dns processor did, and runs dnsperf against it.
func qpsNSD(ctx context.Context, dir, nsd, perf, queryFile string, args []string, z qpsZone, qs []qpsQuery, serial uint32, want []*dns.Msg) (result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return result{}, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	if err := os.WriteFile(filepath.Join(dir, "hive.zone"), []byte(z.zoneFile(serial)), 0o644); err != nil {
		return result{}, err
	}
	conf := nsdConf(dir, ports[0], *nsdServers)
	if err := os.WriteFile(filepath.Join(dir, "nsd.conf"), []byte(conf), 0o644); err != nil {
		return result{}, err
	}
	p := &procs{dir: dir}
	if err := p.start("nsd", nsd, "-d", "-c", filepath.Join(dir, "nsd.conf")); err != nil {
		return result{}, err
	}
	defer p.stop()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var got []*dns.Msg
	if err := waitUntil(wctx, "nsd answers every query", func(context.Context) error {
		got, err = askAll(addr, qs)
		return err
	}); err != nil {
		return result{}, fmt.Errorf("%w (log: %s)", err, filepath.Join(dir, "nsd.log"))
	}
	// NSD (minimal-responses off, its default) also puts the apex NS in
	// the authority section of positive answers; turning that off would
	// drop the SRV targets' addresses from the additional section too.
	nsDiffer, extraDiffer := 0, 0
	for i := range qs {
		if err := sameAnswer(want[i], got[i]); err != nil {
			return result{}, fmt.Errorf("%s: nsd and the dns processor differ: %w", qs[i].line(), err)
		}
		if !sameRRs(want[i].Ns, got[i].Ns) {
			nsDiffer++
		}
		if !sameRRs(want[i].Extra, got[i].Extra) {
			extraDiffer++
		}
	}
	st, err := runDNSPerf(ctx, perf, addr, queryFile, args)
	if err != nil {
		return result{}, err
	}
	r := qpsResult("nsd", st, args)
	version, _ := exec.Command(nsd, "-v").CombinedOutput()
	v, _, _ := strings.Cut(string(version), "\n")
	r.Note = fmt.Sprintf("%s, server-count %d, round-robin, no rate limiting; same rcode, flags and answer section as the dns processor for every query; "+
		"authority differs for %d of %d queries (nsd adds the apex NS), additional for %d; %s",
		strings.TrimSpace(v), *nsdServers, nsDiffer, len(qs), extraDiffer, r.Note)
	fmt.Fprintf(os.Stderr, "dns.qps nsd: %.0f queries/s, avg %.3fms\n", st.QPS, st.AvgMs)
	return r, nil
}

// nsdConf runs NSD as the current user with everything it writes in dir.
func nsdConf(dir string, port, servers int) string {
	return fmt.Sprintf(`server:
	ip-address: 127.0.0.1@%d
	server-count: %d
	reuseport: yes
	username: ""
	chroot: ""
	zonesdir: %q
	database: ""
	zonelistfile: "zone.list"
	xfrdfile: ""
	xfrdir: %q
	pidfile: "nsd.pid"
	logfile: "nsd.log"
	round-robin: yes
	verbosity: 1
	# Response rate limiting would drop most of one client's answers.
	rrl-ratelimit: 0
	rrl-whitelist-ratelimit: 0
remote-control:
	control-enable: no
zone:
	name: %s
	zonefile: hive.zone
`, port, servers, dir, dir, qpsOrigin)
}

// sameAnswer compares rcode, flags and answer section, in any order.
func sameAnswer(a, b *dns.Msg) error {
	if a.Rcode != b.Rcode || a.Authoritative != b.Authoritative || a.Truncated != b.Truncated {
		return fmt.Errorf("rcode/aa/tc %s/%v/%v vs %s/%v/%v", dns.RcodeToString[a.Rcode], a.Authoritative, a.Truncated,
			dns.RcodeToString[b.Rcode], b.Authoritative, b.Truncated)
	}
	if !sameRRs(a.Answer, b.Answer) {
		return fmt.Errorf("answer %v vs %v", a.Answer, b.Answer)
	}
	return nil
}

func sameRRs(a, b []dns.RR) bool {
	str := func(rrs []dns.RR) []string {
		var s []string
		for _, rr := range rrs {
			if rr.Header().Rrtype != dns.TypeOPT {
				s = append(s, strings.ToLower(rr.String()))
			}
		}
		slices.Sort(s)
		return s
	}
	return slices.Equal(str(a), str(b))
}

func qpsResult(system string, st dnsperfStats, args []string) result {
	r := result{
		Name: "dns.qps", System: system, Clients: dnsperfClients(args),
		Ops: st.Completed, Errors: st.Lost, OpsPerSec: st.QPS, Seconds: st.RunSeconds,
		MaxMs: st.MaxMs, AvgMs: st.AvgMs, StdDevMs: st.StdDevMs, MinMs: st.MinMs,
	}
	r.Note = fmt.Sprintf("latency avg %.3f ms, stddev %.3f ms, min %.3f ms, max %.3f ms (dnsperf gives no percentiles: p50_ms/p99_ms not measured); %d sent, %d lost; %s",
		st.AvgMs, st.StdDevMs, st.MinMs, st.MaxMs, st.Sent, st.Lost, st.Rcodes)
	return r
}

// dnsperfClients is dnsperf's -c (default 1).
func dnsperfClients(args []string) int {
	n := 1
	for i, a := range args {
		if a == "-c" && i+1 < len(args) {
			fmt.Sscan(args[i+1], &n)
		}
	}
	return n
}

// dnsperfSeconds is dnsperf's -l, less a second so a profile ends within
// the run (default 10).
func dnsperfSeconds(args []string) int {
	n := 10
	for i, a := range args {
		if a == "-l" && i+1 < len(args) {
			fmt.Sscan(args[i+1], &n)
		}
	}
	return max(1, n-1)
}

// cpuProfile fetches a CPU profile of seconds from the pprof handler on a
// process's metrics port.
func cpuProfile(metricsAddr, file string, seconds int) error {
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", metricsAddr, seconds))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s", resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
