// Package dnsnode is the dns processor role put together: the host state,
// kept in step with the control plane (bootstrap at a revision, then the
// event log) and with the hosts themselves (PushHosts), the processors that
// serve it (DNS, optionally a hosts file), and the DNSProcessor gRPC API.
//
// The node reports ready once bootstrapped — from the control plane, or
// from a peer dns processor when the control plane does not answer — and
// stays ready when the control plane goes away later: DNS keeps answering
// from what it has (DESIGN.md §2, Degraded).
package dnsnode

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/dnsserver"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hostsfile"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/processor"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/zone"
)

// Config is how a Node is built.
type Config struct {
	// DNSAddr is where DNS is served, UDP and TCP (port 0 picks one).
	DNSAddr string
	// DNS configures the zone and the handler.
	DNS dnsserver.Config
	// HostsFile, when set, is a file kept in /etc/hosts format.
	HostsFile string
	// ControlPlane returns the control-plane client, nil until this node
	// has joined the cluster.
	ControlPlane func() ControlPlane
	// Peers lists the other dns processors (from the gossip view).
	Peers func() []Peer
	// DialPeer connects to a peer dns processor as this node.
	DialPeer func(addr string) (hivemindv1.DNSProcessorClient, func() error, error)
	// OnReady is told once the node is bootstrapped (health SERVING).
	OnReady func()
	// RetryInterval between bootstrap attempts (default 2s).
	RetryInterval time.Duration
	Logger        *slog.Logger
}

// Node is a running dns processor.
type Node struct {
	cfg     Config
	log     *slog.Logger
	origin  string
	state   *hoststate.State
	handler *dnsserver.Handler
	server  *dnsserver.Server
	peers   peerConns

	lastUpdate atomic.Int64 // unix nanos of the last change on either path
	mu         sync.Mutex
	from       string // where the bootstrap came from, "" before
	readyOnce  sync.Once
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// New builds a node; Register its API, then Start it.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if cfg.ControlPlane == nil {
		cfg.ControlPlane = func() ControlPlane { return nil }
	}
	if cfg.Peers == nil {
		cfg.Peers = func() []Peer { return nil }
	}
	h, err := dnsserver.NewHandler(cfg.DNS)
	if err != nil {
		return nil, err
	}
	origin := cfg.DNS.Zone.Origin
	if origin == "" {
		origin = zone.DefaultOrigin
	}
	n := &Node{cfg: cfg, log: cfg.Logger, origin: origin, state: hoststate.New(), handler: h}
	n.peers.dial = cfg.DialPeer
	return n, nil
}

// Register serves the DNSProcessor API on s.
func (n *Node) Register(s grpc.ServiceRegistrar) {
	hivemindv1.RegisterDNSProcessorServer(s, service{n: n})
}

// Start binds the DNS sockets (answering SERVFAIL until bootstrapped) and
// starts bootstrapping in the background.
func (n *Node) Start(ctx context.Context) error {
	n.server = dnsserver.NewServer(n.cfg.DNSAddr, n.handler)
	if err := n.server.Start(); err != nil {
		return err
	}
	n.log.Info("serving DNS", "addr", n.server.Addr(), "zone", n.origin)
	ctx, n.cancel = context.WithCancel(ctx)
	s := &syncer{
		state: n.state, cp: n.cfg.ControlPlane, peers: n.cfg.Peers, peer: n.peers.get,
		log: n.log, retry: n.cfg.RetryInterval, touched: n.touch,
		onReady: func(from string) { n.bootstrapped(ctx, from) },
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		s.run(ctx)
	}()
	return nil
}

// DNSAddr is the address DNS is served on.
func (n *Node) DNSAddr() string { return n.server.Addr() }

// State is the host state the node serves.
func (n *Node) State() *hoststate.State { return n.state }

// Ready reports whether the node is bootstrapped.
func (n *Node) Ready() bool { return n.bootstrappedFrom() != "" }

func (n *Node) bootstrappedFrom() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.from
}

func (n *Node) touch() { n.lastUpdate.Store(time.Now().UnixNano()) }

// bootstrapped records a bootstrap and, the first time, starts the
// processors: before it there is nothing to serve.
func (n *Node) bootstrapped(ctx context.Context, from string) {
	n.mu.Lock()
	n.from = from
	n.mu.Unlock()
	n.touch()
	n.readyOnce.Do(func() {
		// The zone is built before anyone is told: a health check that says
		// SERVING must not meet a SERVFAIL.
		if err := n.handler.Update(ctx, n.state.Snapshot()); err != nil {
			n.log.Error("first zone", "err", err)
		}
		n.run(ctx, "dns", n.handler)
		if n.cfg.HostsFile != "" {
			w, err := hostsfile.New(hostsfile.Config{Path: n.cfg.HostsFile, Origin: n.origin})
			if err != nil {
				n.log.Error("hosts file", "err", err)
			} else {
				n.run(ctx, "hostsfile", w)
			}
		}
		if n.cfg.OnReady != nil {
			n.cfg.OnReady()
		}
	})
}

func (n *Node) run(ctx context.Context, name string, p processor.Processor) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		_ = processor.Run(ctx, n.state, p, processor.Options{
			OnError: func(err error) { n.log.Warn("processor update failed", "processor", name, "err", err) },
		})
	}()
}

// Stop stops bootstrapping, the processors and the DNS server.
func (n *Node) Stop(ctx context.Context) error {
	if n.cancel != nil {
		n.cancel()
	}
	var err error
	if n.server != nil {
		err = n.server.Shutdown(ctx)
	}
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		err = errors.Join(err, ctx.Err())
	}
	n.peers.closeAll()
	return err
}
