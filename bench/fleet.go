package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/secret"
)

// fleetConfig is the fleet suite's size and pace.
type fleetConfig struct {
	Hosts       int           // simulated hosts (-fleet-hosts)
	Churn       time.Duration // steady churn (-fleet-churn)
	ChurnRate   int           // record changes per second
	FailPerMin  int           // host failures (and recoveries) per minute of churn
	Burst       int           // hosts re-asserting after the control-plane outage
	NotifyBurst int           // hosts failing at once in the notifier phase
	Workers     int           // concurrent joins in the join storm
	Profile     string        // where the dns processor's CPU profile during churn goes ("": none)
}

// fleet is one running fleet benchmark: the cluster's processes, the
// simulated hosts and what they measure.
type fleet struct {
	cfg     fleetConfig
	dir     string
	p       *procs
	cps     []string // control-plane gRPC addresses
	dnsGRPC []string
	dnsUDP  []string
	dnsHTTP []string // metrics (pprof) addresses of the dns processors
	notif   []string
	net     *fleetNet
	admin   *cpclient.Client
	hosts   []*simHost
	rcv     *fleetReceiver
	subs    []fleetSub
	log     *slog.Logger
	change  atomic.Uint32 // the last change id handed out
	cpuGone map[string]time.Duration
	out     []result
}

func benchFleet(ctx context.Context, dir, binDir string, cfg fleetConfig) ([]result, error) {
	f := &fleet{cfg: cfg, dir: dir, cpuGone: map[string]time.Duration{},
		log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	if err := f.startCluster(ctx, binDir); err != nil {
		return nil, err
	}
	defer f.p.stop()
	defer f.close()
	// An interrupted run must not leave the cluster running.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			f.p.stop()
			os.Exit(1)
		}
	}()
	before := f.stats()
	benchSelf := selfStat()

	progress("joinStorm")
	if err := f.joinStorm(ctx); err != nil {
		return f.out, fmt.Errorf("join storm: %w", err)
	}
	f.memoryRows(before, benchSelf)
	progress("churnPhase")
	if err := f.churnPhase(ctx); err != nil {
		return f.out, fmt.Errorf("churn: %w", err)
	}
	progress("cpRestart")
	if err := f.cpRestart(ctx); err != nil {
		return f.out, fmt.Errorf("control-plane restart: %w", err)
	}
	progress("dnsRestart")
	if err := f.dnsRestart(ctx); err != nil {
		return f.out, fmt.Errorf("dns processor restart: %w", err)
	}
	progress("outageBurst")
	if err := f.outageBurst(ctx); err != nil {
		return f.out, fmt.Errorf("outage: %w", err)
	}
	progress("notifierBurst")
	if err := f.notifierBurst(ctx); err != nil {
		return f.out, fmt.Errorf("notifier: %w", err)
	}
	f.snapshotRow()
	f.cpuRows()
	return f.out, nil
}

// progress tells the operator where the run is.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+"fleet: "+format+"\n", args...)
}

func (f *fleet) add(r result) {
	r.System = "hivemind"
	if r.Hosts == 0 {
		r.Hosts = f.cfg.Hosts
	}
	fmt.Fprintf(os.Stderr, "%s: p50 %.1fms p99 %.1fms %.2fs errors %d — %s\n", r.Name, r.P50ms, r.P99ms, r.Seconds, r.Errors, r.Note)
	f.out = append(f.out, r)
}

// startCluster starts 3 control-plane members, 2 dns processors and 2
// notifiers with 100 subscriptions, and connects the simulated fleet.
func (f *fleet) startCluster(ctx context.Context, binDir string) error {
	p, cps, err := startHivemindWith(f.dir, binDir, func(int) []string {
		// Simulated hosts do not gossip: without a long grace the leader
		// would record every one of them failed 30 s after it joined.
		return []string{"--member-grace", "24h", "--snapshot-every", "20000"}
	})
	if err != nil {
		return err
	}
	f.p, f.cps = p, cps
	admin, err := cpclient.New(cpclient.Config{Endpoints: cps, Dial: dialConfig()})
	if err != nil {
		return err
	}
	f.admin = admin
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := waitUntil(wctx, "control-plane leader", func(c context.Context) error {
		_, err := admin.Put(c, &hivemindv1.PutRequest{Key: "/bench/fleet/ready", Value: []byte("1")})
		return err
	}); err != nil {
		return err
	}
	ports, err := freePorts(3*2 + 2*2)
	if err != nil {
		return err
	}
	common := []string{"--log-level", "warn", "--seeds", strings.Join(cps, ","),
		"--cluster-secret-file", filepath.Join(f.dir, "cluster-secret"), "--api-tokens-file", filepath.Join(f.dir, "api-tokens")}
	for i := range 2 {
		name := fmt.Sprintf("dns%d", i+1)
		g, u, m := fmt.Sprintf("127.0.0.1:%d", ports[3*i]), fmt.Sprintf("127.0.0.1:%d", ports[3*i+1]), fmt.Sprintf("127.0.0.1:%d", ports[3*i+2])
		gp, err := freePorts(1)
		if err != nil {
			return err
		}
		args := append([]string{"--node-name", name, "--grpc-addr", g, "--dns-addr", u, "--metrics-addr", m,
			"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", gp[0]), "--data-dir", filepath.Join(f.dir, name)}, common...)
		if err := p.start("hivemind-"+name, filepath.Join(binDir, "hivemind-dns"), args...); err != nil {
			return err
		}
		f.dnsGRPC, f.dnsUDP, f.dnsHTTP = append(f.dnsGRPC, g), append(f.dnsUDP, u), append(f.dnsHTTP, m)
	}
	for i := range 2 {
		name := fmt.Sprintf("notifier%d", i+1)
		g := fmt.Sprintf("127.0.0.1:%d", ports[6+2*i])
		args := append([]string{"--node-name", name, "--grpc-addr", g, "--metrics-addr", "",
			"--gossip-addr", fmt.Sprintf("127.0.0.1:%d", ports[7+2*i]), "--data-dir", filepath.Join(f.dir, name),
			"--egress-allow-loopback", "--lease", "5s"}, common...)
		if err := p.start("hivemind-"+name, filepath.Join(binDir, "hivemind-notifier"), args...); err != nil {
			return err
		}
		f.notif = append(f.notif, g)
	}
	for _, a := range f.dnsUDP {
		if err := waitUntil(wctx, "dns processor "+a+" bootstrapped", func(context.Context) error { return soa(a) }); err != nil {
			return err
		}
	}
	for _, a := range f.notif {
		if err := waitHealthy(ctx, filepath.Join(binDir, "hivemind-notifier"), a, 60*time.Second); err != nil {
			return err
		}
	}
	progress("cluster up; 100 subscriptions")
	if err := f.subscribe(ctx); err != nil {
		return err
	}
	return f.connect()
}

// connect opens the connections the simulated hosts share.
func (f *fleet) connect() error {
	s, err := secret.Load("", filepath.Join(f.dir, "cluster-secret"))
	if err != nil {
		return err
	}
	n := &fleetNet{secret: s, dns: f.dnsGRPC, dnsConn: map[string][]*grpc.ClientConn{}}
	plain := grpcclient.Config{MaxRetries: -1}
	const perTarget = 4
	for _, ep := range f.cps {
		var conns []*grpc.ClientConn
		for range perTarget {
			c, err := grpcclient.Dial(ep, plain)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		n.cpConns = append(n.cpConns, conns)
	}
	for _, d := range f.dnsGRPC {
		for range perTarget {
			c, err := grpcclient.Dial(d, plain)
			if err != nil {
				return err
			}
			n.dnsConn[d] = append(n.dnsConn[d], c)
		}
	}
	f.net = n
	return nil
}

func (f *fleet) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, h := range f.hosts {
		if h.pub == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = h.pub.Stop(ctx)
			cancel()
		}()
	}
	wg.Wait()
	if f.net != nil {
		for _, cs := range f.net.cpConns {
			for _, c := range cs {
				c.Close()
			}
		}
		for _, cs := range f.net.dnsConn {
			for _, c := range cs {
				c.Close()
			}
		}
	}
	if f.admin != nil {
		f.admin.Close()
	}
	if f.rcv != nil {
		f.rcv.srv.Close()
	}
}

// joinStorm admits and publishes every host, Workers at a time, and waits
// until the control plane has every record and both dns processors answer
// every host.
func (f *fleet) joinStorm(ctx context.Context) error {
	n := f.cfg.Hosts
	f.hosts = make([]*simHost, n)
	f.change.Store(uint32(n))
	start := time.Now()
	next := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	var admitMu sync.Mutex
	var admitLat []time.Duration
	for range f.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				h := newSimHost(f.net, i)
				f.hosts[i] = h
				t := time.Now()
				err := h.join(ctx)
				if err == nil {
					admitMu.Lock()
					admitLat = append(admitLat, time.Since(t))
					admitMu.Unlock()
					err = h.start(ctx, f.log)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	for i := range n {
		next <- i
		if i%1000 == 999 {
			progress("%d hosts handed to the join workers after %.1fs", i+1, time.Since(start).Seconds())
		}
	}
	close(next)
	wg.Wait()
	admitted := time.Since(start)
	if failed.Load() > 0 {
		return fmt.Errorf("%d hosts not admitted; first: %v", failed.Load(), firstErr.Load())
	}
	// Durable: the control plane acknowledged every host's record.
	if err := f.waitWritten(ctx, f.hosts, 5*time.Minute); err != nil {
		return err
	}
	durable := time.Since(start)
	r := summarize(admitLat)
	r.Name, r.Clients, r.Seconds = "fleet.join_storm", f.cfg.Workers, durable.Seconds()
	r.OpsPerSec = float64(n) / durable.Seconds()
	r.Note = fmt.Sprintf("%d hosts: handshake, signed Join committed, ticket verified, record published both ways; all admitted after %.1fs, every record acknowledged by the control plane after %.1fs; p50/p99 are one host's admission (handshake + Join); %d handshakes and %d joins retried",
		n, admitted.Seconds(), durable.Seconds(), f.net.handshakeRetries.Load(), f.net.joinRetries.Load())
	f.add(r)
	// Served: both dns processors answer every host's address.
	for i, a := range f.dnsUDP {
		t, missing := f.waitServed(a, f.hosts, 5*time.Minute)
		r := result{Name: "fleet.join_storm.dns_served", Clients: 1, Seconds: time.Since(start).Seconds(), Errors: int64(missing)}
		if !t.IsZero() {
			r.Seconds = t.Sub(start).Seconds()
		}
		r.Note = fmt.Sprintf("dns%d answers every host's A record %.1fs after the join storm's start (a full sweep of %d names); %d hosts not answered", i+1, r.Seconds, n, missing)
		f.add(r)
	}
	return nil
}

// waitWritten waits until the control plane acknowledged each host's
// newest record.
func (f *fleet) waitWritten(ctx context.Context, hosts []*simHost, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		behind := 0
		for _, h := range hosts {
			if l := h.pub.Latest(); l != nil && h.pub.Written() < l.Seq {
				behind++
			}
		}
		if behind == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d hosts' records not acknowledged after %s", behind, limit)
		}
		if time.Now().Second()%10 == 0 && time.Now().Nanosecond() < 50e6 {
			progress("%d of %d hosts' records not acknowledged yet", behind, len(hosts))
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// memoryRows: resident memory per process after the join storm, and per
// host beyond the same process before the fleet joined.
func (f *fleet) memoryRows(before map[string]procStat, benchBefore procStat) {
	after := f.stats()
	for _, name := range f.procNames() {
		b, a := before[name], after[name]
		r := result{Name: "fleet.memory", Clients: 1, Note: name}
		r.RSSBytes = a.RSS
		r.BytesPerHost = float64(a.RSS-b.RSS) / float64(f.cfg.Hosts)
		r.Note = fmt.Sprintf("%s: %.0f bytes/host = (RSS %.1f MiB after the join storm − %.1f MiB before) / %d hosts", name, r.BytesPerHost, mib(a.RSS), mib(b.RSS), f.cfg.Hosts)
		f.add(r)
	}
	s := selfStat()
	f.add(result{Name: "fleet.memory", Clients: 1, RSSBytes: s.RSS, BytesPerHost: float64(s.RSS-benchBefore.RSS) / float64(f.cfg.Hosts),
		Note: fmt.Sprintf("bench (the simulated hosts, their publishers and shared connections): %.0f bytes/host, RSS %.1f MiB", float64(s.RSS-benchBefore.RSS)/float64(f.cfg.Hosts), mib(s.RSS))})
}

func (f *fleet) procNames() []string {
	return []string{"hivemind-cp1", "hivemind-cp2", "hivemind-cp3", "hivemind-dns1", "hivemind-dns2", "hivemind-notifier1", "hivemind-notifier2"}
}

func (f *fleet) stats() map[string]procStat {
	out := map[string]procStat{}
	for _, name := range f.procNames() {
		if i := f.p.index(name); i >= 0 {
			out[name] = f.p.stat(i)
		}
	}
	return out
}

// restart stops the named process, runs during (the cluster goes on
// without it), and starts it again; it returns when it was started.
func (f *fleet) stop(name string) int {
	i := f.p.index(name)
	f.cpuGone[name] += f.p.stat(i).CPU
	f.p.stopOne(i)
	return i
}

func (f *fleet) cpuRows() {
	st := f.stats()
	for _, name := range f.procNames() {
		s := st[name]
		f.add(result{Name: "fleet.cpu", Clients: 1, CPUSeconds: (s.CPU + f.cpuGone[name]).Seconds(), RSSBytes: s.RSS,
			Note: fmt.Sprintf("%s: %.1f CPU seconds over the whole run (all its lives), RSS %.1f MiB at the end", name, (s.CPU + f.cpuGone[name]).Seconds(), mib(s.RSS))})
	}
	s := selfStat()
	f.add(result{Name: "fleet.cpu", Clients: 1, CPUSeconds: s.CPU.Seconds(), RSSBytes: s.RSS,
		Note: fmt.Sprintf("bench process (simulated hosts, probes, webhook receiver): %.1f CPU seconds, RSS %.1f MiB at the end", s.CPU.Seconds(), mib(s.RSS))})
}

// snapshotRow reports the control-plane members' raft snapshots on disk.
func (f *fleet) snapshotRow() {
	var sizes []string
	var largest int64
	for i := range 3 {
		st, err := os.Stat(filepath.Join(f.dir, fmt.Sprintf("cp%d", i+1), "raft", "snap", "latest.snap"))
		if err != nil {
			sizes = append(sizes, fmt.Sprintf("cp%d: none", i+1))
			continue
		}
		sizes = append(sizes, fmt.Sprintf("cp%d: %d bytes", i+1, st.Size()))
		largest = max(largest, st.Size())
	}
	f.add(result{Name: "fleet.snapshot", Clients: 1, Bytes: largest,
		Note: "raft snapshot on disk (latest.snap, taken every 20,000 entries in this run): " + strings.Join(sizes, ", ")})
}

// fleetReceiver is the webhook receiver: every request's subscription,
// event id, event time and arrival.
type fleetReceiver struct {
	srv  *http.Server
	addr string
	mu   sync.Mutex
	hits []hookHit
}

type hookHit struct {
	Sub, EventID, URI string
	Time, At          time.Time
	DeliveryID        string
}

func (h *fleetReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	b, _ := io.ReadAll(r.Body)
	var body struct {
		Name       string    `json:"name"`
		URI        string    `json:"uri"`
		EventID    string    `json:"event_id"`
		DeliveryID string    `json:"delivery_id"`
		Time       time.Time `json:"time"`
	}
	if err := json.Unmarshal(b, &body); err == nil {
		h.mu.Lock()
		h.hits = append(h.hits, hookHit{Sub: body.Name, EventID: body.EventID, URI: body.URI, Time: body.Time, At: at, DeliveryID: body.DeliveryID})
		h.mu.Unlock()
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *fleetReceiver) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.hits)
}

func startReceiver() (*fleetReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &fleetReceiver{addr: ln.Addr().String()}
	h.srv = &http.Server{Handler: h}
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

// fleetSub is one of the 100 subscriptions and which host groups it
// matches: 50 by prefix, 50 by a CEL filter.
type fleetSub struct {
	name   string
	groups map[int]bool
}

func (f *fleet) subscribe(ctx context.Context) error {
	rcv, err := startReceiver()
	if err != nil {
		return err
	}
	f.rcv = rcv
	conn, err := grpcclient.Dial(f.notif[0], dialConfig())
	if err != nil {
		return err
	}
	defer conn.Close()
	api := hivemindv1.NewNotifierClient(conn)
	for i := range 100 {
		s := &hivemindv1.Subscription{Name: fmt.Sprintf("fleet-%03d", i), Target: "http://" + rcv.addr + "/hook"}
		var g int
		if i < 50 {
			// Prefix: the host records of group i.
			g = i
			s.Prefix = fmt.Sprintf("/nodes/g%02d-", g)
		} else {
			// CEL: groups 25..74, so groups 25..49 match two subscriptions.
			g = i - 25
			s.Prefix = "/nodes/"
			s.Filter = fmt.Sprintf(`type == "kv.put" && uri.startsWith("/nodes/g%02d-") && uri.endsWith("/host")`, g)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := waitUntil(wctx, "CreateSubscription "+s.Name, func(c context.Context) error {
			_, err := api.CreateSubscription(c, &hivemindv1.CreateSubscriptionRequest{Subscription: s})
			return err
		})
		cancel()
		if err != nil {
			return err
		}
		f.subs = append(f.subs, fleetSub{name: s.Name, groups: map[int]bool{g: true}})
	}
	return nil
}

// matching is how many subscriptions match a host record event of host i.
func (f *fleet) matching(i int) []string {
	var out []string
	for _, s := range f.subs {
		if s.groups[i%100] {
			out = append(out, s.name)
		}
	}
	return out
}

// pick returns k distinct random hosts.
func (f *fleet) pick(k int) []*simHost {
	if k == 1 {
		return []*simHost{f.hosts[rand.IntN(len(f.hosts))]}
	}
	idx := rand.Perm(len(f.hosts))[:min(k, len(f.hosts))]
	out := make([]*simHost, len(idx))
	for i, j := range idx {
		out[i] = f.hosts[j]
	}
	return out
}
