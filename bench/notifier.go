package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// benchNotifier measures notifier.delivery: the time from an event's
// commit (the Put acknowledged by the control plane) until the webhook
// reaches a receiver in this process, with 1 and then 3 notifier replicas
// on a real 3-node control plane, all processes on loopback. Latency comes
// from a steady stream (rate events/s for d); deliveries/s from a burst of
// burst events written by 16 clients at once.
func benchNotifier(dir, binDir string, replicaCounts []int, d time.Duration, rate, burst int) ([]result, error) {
	var out []result
	for _, n := range replicaCounts {
		r, err := notifierRun(filepath.Join(dir, fmt.Sprintf("replicas-%d", n)), binDir, n, d, rate, burst)
		if err != nil {
			return nil, fmt.Errorf("%d replicas: %w", n, err)
		}
		fmt.Fprintf(os.Stderr, "notifier.delivery replicas=%d: p50 %.1fms p99 %.1fms, %.0f deliveries/s\n", n, r.P50ms, r.P99ms, r.OpsPerSec)
		out = append(out, r)
	}
	return out, nil
}

// hookReceiver records when each uri's webhook first arrived, and every
// request.
type hookReceiver struct {
	mu       sync.Mutex
	first    map[string]time.Time
	requests int
	changed  chan struct{}
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	var body struct {
		URI string `json:"uri"`
	}
	b, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(b, &body)
	h.mu.Lock()
	h.requests++
	if _, ok := h.first[body.URI]; !ok {
		h.first[body.URI] = now
	}
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// waitFor waits until every uri has arrived.
func (h *hookReceiver) waitFor(uris []string, limit time.Duration) error {
	deadline := time.After(limit)
	for {
		h.mu.Lock()
		missing := 0
		for _, u := range uris {
			if _, ok := h.first[u]; !ok {
				missing++
			}
		}
		h.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-h.changed:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			return fmt.Errorf("%d of %d webhooks missing after %s", missing, len(uris), limit)
		}
	}
}

func notifierRun(dir, binDir string, replicas int, d time.Duration, rate, burst int) (result, error) {
	ctx := context.Background()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return result{}, err
	}
	rcv := &hookReceiver{first: map[string]time.Time{}, changed: make(chan struct{}, 1)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	srv := &http.Server{Handler: rcv}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	p, cps, notifiers, err := startNotifierCluster(dir, binDir, replicas)
	if err != nil {
		return result{}, err
	}
	defer p.stop()
	cl, err := cpclient.New(cpclient.Config{Endpoints: cps, Dial: dialConfig()})
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	for _, addr := range notifiers {
		if err := waitHealthy(ctx, filepath.Join(binDir, "hivemind-notifier"), addr, 60*time.Second); err != nil {
			return result{}, err
		}
	}
	conn, err := grpcclient.Dial(notifiers[0], dialConfig())
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := waitUntil(wctx, "CreateSubscription", func(c context.Context) error {
		_, err := hivemindv1.NewNotifierClient(conn).CreateSubscription(c, &hivemindv1.CreateSubscriptionRequest{Subscription: &hivemindv1.Subscription{
			Name: "bench", Target: "http://" + ln.Addr().String() + "/hook", Prefix: "/bench/notify/",
		}})
		return err
	}); err != nil {
		return result{}, err
	}

	var mu sync.Mutex
	acked := map[string]time.Time{}
	put := func(c context.Context, uri string) error {
		_, err := cl.Put(c, &hivemindv1.PutRequest{Key: uri, Value: []byte(`{"bench":true}`)})
		if err == nil {
			mu.Lock()
			acked[uri] = time.Now()
			mu.Unlock()
		}
		return err
	}
	putTimed := func(uri string) error {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return put(c, uri)
	}

	// A few events first, so connections and the receiver are warm.
	var warm []string
	for i := range 10 {
		u := fmt.Sprintf("/bench/notify/warm/%d", i)
		if err := putTimed(u); err != nil {
			return result{}, err
		}
		warm = append(warm, u)
	}
	if err := rcv.waitFor(warm, 30*time.Second); err != nil {
		return result{}, fmt.Errorf("warm-up: %w", err)
	}

	// Steady stream: latency.
	var steady []string
	var errs int64
	tick := time.NewTicker(time.Second / time.Duration(rate))
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	for i := 0; time.Now().Before(end); i++ {
		<-tick.C
		u := fmt.Sprintf("/bench/notify/steady/%d", i)
		steady = append(steady, u)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if putTimed(u) != nil {
				errMu.Lock()
				errs++
				errMu.Unlock()
			}
		}()
	}
	tick.Stop()
	wg.Wait()
	mu.Lock()
	var sent []string
	for _, u := range steady {
		if _, ok := acked[u]; ok {
			sent = append(sent, u)
		}
	}
	mu.Unlock()
	if err := rcv.waitFor(sent, 60*time.Second); err != nil {
		return result{}, fmt.Errorf("steady: %w", err)
	}
	var lat []time.Duration
	early := 0
	rcv.mu.Lock()
	mu.Lock()
	for _, u := range sent {
		l := rcv.first[u].Sub(acked[u])
		if l < 0 { // the webhook beat the Put's answer back to the client
			early++
			l = 0
		}
		lat = append(lat, l)
	}
	mu.Unlock()
	rcv.mu.Unlock()
	r := summarize(lat)

	// Burst: throughput.
	var bursty []string
	for i := range burst {
		bursty = append(bursty, fmt.Sprintf("/bench/notify/burst/%d", i))
	}
	start := time.Now()
	next := make(chan string)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range next {
				for putTimed(u) != nil {
					errMu.Lock()
					errs++
					errMu.Unlock()
				}
			}
		}()
	}
	for _, u := range bursty {
		next <- u
	}
	close(next)
	wg.Wait()
	written := time.Since(start)
	if err := rcv.waitFor(bursty, 5*time.Minute); err != nil {
		return result{}, fmt.Errorf("burst: %w", err)
	}
	var last time.Time
	rcv.mu.Lock()
	for _, u := range bursty {
		if t := rcv.first[u]; t.After(last) {
			last = t
		}
	}
	requests := rcv.requests
	rcv.mu.Unlock()
	elapsed := last.Sub(start)

	r.Name, r.System, r.Clients, r.Replicas = "notifier.delivery", "hivemind", 1, replicas
	r.Errors = errs
	r.Seconds = elapsed.Seconds()
	r.OpsPerSec = float64(burst) / elapsed.Seconds()
	r.Note = fmt.Sprintf("latency: Put acknowledged → webhook received, %d events at %d/s (%d webhooks arrived before the Put's answer, counted as 0); deliveries/s: %d events written by 16 clients in %.1fs, all delivered after %.1fs; %d requests for %d events; 3 control-plane nodes and %d notifier(s) on loopback, 2 CPUs shared",
		len(lat), rate, early, burst, written.Seconds(), elapsed.Seconds(), requests, len(warm)+len(sent)+burst, replicas)
	return r, nil
}

// startNotifierCluster starts a 3-node control plane and n notifiers that
// join it; it returns the control-plane and the notifier gRPC addresses.
func startNotifierCluster(dir, binDir string, n int) (*procs, []string, []string, error) {
	p, cps, err := startHivemind(dir, binDir)
	if err != nil {
		return nil, nil, nil, err
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		p.stop()
		return nil, nil, nil, err
	}
	var notifiers []string
	for i := range n {
		name := fmt.Sprintf("notifier%d", i+1)
		addr := fmt.Sprintf("127.0.0.1:%d", ports[2*i])
		err := p.start("hivemind-"+name, filepath.Join(binDir, "hivemind-notifier"),
			"--node-name", name, "--grpc-addr", addr, "--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[2*i+1]), "--metrics-addr", "",
			"--data-dir", filepath.Join(dir, name), "--log-level", "warn",
			// startHivemind wrote these.
			"--cluster-secret-file", filepath.Join(dir, "cluster-secret"), "--api-tokens-file", filepath.Join(dir, "api-tokens"),
			"--seeds", strings.Join(cps, ","), "--egress-allow-loopback", "--lease", "5s")
		if err != nil {
			p.stop()
			return nil, nil, nil, err
		}
		notifiers = append(notifiers, addr)
	}
	return p, cps, notifiers, nil
}

// waitHealthy runs the binary's healthcheck against addr until it passes.
func waitHealthy(ctx context.Context, bin, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if exec.CommandContext(ctx, bin, "healthcheck", "--grpc-addr", addr, "--timeout", "1s").Run() == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New(addr + " not healthy after " + limit.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func mustAbs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		fatalf("%v", err)
	}
	return a
}
