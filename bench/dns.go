package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// benchDNSPropagation measures dns.propagation: a 3-node control plane and
// two dns processors; the benchmark plays a host that changes its address
// `changes` times at `rate` per second, each change sent both ways as the
// host agent sends it (PushHosts to both processors, Put on the control
// plane). One resolver loop per processor asks for the host's address back
// to back; a change has propagated when every processor answers it or a
// later one. The address encodes the record's seq.
func benchDNSPropagation(ctx context.Context, dir, binDir string, changes, rate int) ([]result, error) {
	p, eps, err := startHivemind(filepath.Join(dir, "dns-propagation"), binDir)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	ports, err := freePorts(9)
	if err != nil {
		return nil, err
	}
	var dnsAddrs, grpcAddrs []string
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("dns%d", i+1)
		grpcAddr, dnsAddr := fmt.Sprintf("127.0.0.1:%d", ports[3*i]), fmt.Sprintf("127.0.0.1:%d", ports[3*i+1])
		err := p.start("hivemind-"+name, filepath.Join(binDir, "hivemind-dns"),
			"--node-name", name, "--grpc-addr", grpcAddr, "--dns-addr", dnsAddr, "--metrics-addr", "",
			"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]), "--seeds", eps[0]+","+eps[1]+","+eps[2],
			"--data-dir", filepath.Join(p.dir, name), "--log-level", "warn",
			"--cluster-secret-file", filepath.Join(p.dir, "cluster-secret"), "--api-tokens-file", filepath.Join(p.dir, "api-tokens"))
		if err != nil {
			return nil, err
		}
		dnsAddrs, grpcAddrs = append(dnsAddrs, dnsAddr), append(grpcAddrs, grpcAddr)
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

	var streams []hivemindv1.DNSProcessor_PushHostsClient
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	for _, a := range grpcAddrs {
		conn, err := grpcclient.Dial(a, dialConfig())
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		s, err := hivemindv1.NewDNSProcessorClient(conn).PushHosts(sctx)
		if err != nil {
			return nil, err
		}
		streams = append(streams, s)
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
	r.Note = fmt.Sprintf("%d changes at %d/s, fast path + durable path, until both dns processors answer", changes, rate)
	if firstErr != nil {
		r.Note += "; first error: " + firstErr.Error()
	}
	if missing > 0 {
		r.Note += fmt.Sprintf("; %d changes never answered by every processor", missing)
	}
	fmt.Fprintf(os.Stderr, "dns propagation: p50 %.2fms p99 %.2fms max %.2fms (%d changes)\n", r.P50ms, r.P99ms, r.MaxMs, len(lat))
	return []result{r}, nil
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
