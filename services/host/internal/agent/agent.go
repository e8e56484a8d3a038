// Package agent is the host agent: it runs the health checks of the
// configured services, watches the host's addresses and its configuration
// file, and turns every change into a new host record that the publisher
// sends both ways (control plane and dns processors).
//
// Changes come from three goroutines (the check runner's observer, the
// address watcher, the configuration watcher) and from the Host API; they
// all end in rebuild, under one lock, so records are built in the order the
// changes happened and a record equal to the last one is not published.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/pkg/hostpublish"
	"github.com/hivemind/hivemind/services/host/internal/check"
	"github.com/hivemind/hivemind/services/host/internal/harvest"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
	"github.com/hivemind/hivemind/services/host/internal/record"
	"github.com/hivemind/hivemind/services/host/internal/seq"
)

// Options configure an Agent.
type Options struct {
	// Node is the node's cluster identity (--node-name). The configuration's
	// node must be empty or equal to it: the control plane lets a node
	// write only its own /nodes/<node>/.
	Node string
	// Loader reads the configuration (file and flags).
	Loader hostconfig.Loader
	// DataDir holds the sequence file.
	DataDir string
	// Publish configures the publisher; Node, Seq and Clock are set here.
	Publish hostpublish.Options
	// Addrs lists the interfaces' addresses (nil: the machine's).
	Addrs harvest.AddrSource
	// Probes, when set, is given the configuration's exec probes at start
	// and on every reload (the Node/Probe service runs them).
	Probes func(map[string][]string)
	// AddressInterval and ConfigInterval are the harvesters' polling
	// intervals (0: their defaults).
	AddressInterval, ConfigInterval time.Duration
	// CheckOutputInterval throttles output-only changes of checks
	// (check.Options.OutputInterval; 0: every change at once).
	CheckOutputInterval time.Duration
	Logger              *slog.Logger
}

// Agent is a running host agent.
type Agent struct {
	o      Options
	log    *slog.Logger
	seq    *seq.Sequence
	pub    *hostpublish.Publisher
	runner *check.Runner
	config *harvest.ConfigWatcher

	mu       sync.Mutex // one rebuild at a time, in order
	builder  record.Builder
	cfg      *hostconfig.Config
	detected []netip.Addr // when addresses are detected
	addrStop context.CancelFunc
	ctx      context.Context
	stopped  bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New loads the configuration and opens the sequence; Start runs the agent.
func New(o Options) (*Agent, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	a := &Agent{o: o, log: o.Logger, builder: record.Builder{Node: o.Node}}
	loader := o.Loader
	loader.Hostname = func() (string, error) { return o.Node, nil }
	loader.Check = func(c *hostconfig.Config) error {
		if c.Node != o.Node {
			return &hostconfig.FieldError{Path: "node", Msg: fmt.Sprintf("%q differs from this node's name %q (--node-name); the node name cannot change while the agent runs", c.Node, o.Node)}
		}
		return nil
	}
	cfg, data, err := loader.Load()
	if err != nil {
		return nil, err
	}
	a.cfg = cfg
	a.config = harvest.NewConfigWatcher(loader, cfg, data, harvest.ConfigWatcherOptions{
		Interval: o.ConfigInterval,
		OnChange: func(_, cfg *hostconfig.Config) { a.applyConfig(cfg) },
		OnError: func(err error) {
			a.log.Error("configuration file changed but is not valid; keeping the running configuration", "err", err)
		},
	})
	if a.seq, err = seq.Open(o.DataDir, 0); err != nil {
		return nil, err
	}
	po := o.Publish
	po.Node, po.Seq, po.Clock = o.Node, a.seq, hlc.New(nil)
	if po.Logger == nil {
		po.Logger = o.Logger
	}
	a.pub = hostpublish.New(po)
	a.runner = check.NewRunner(check.Options{
		OutputInterval: o.CheckOutputInterval,
		Observer:       func(check.ServiceHealth) { a.rebuild() },
	})
	return a, nil
}

// Start runs the checks, the harvesters and the publisher until Stop.
func (a *Agent) Start(ctx context.Context) error {
	ctx, a.cancel = context.WithCancel(ctx)
	a.mu.Lock()
	a.ctx = ctx
	cfg := a.cfg
	a.mu.Unlock()
	a.pub.Start(ctx)
	if err := a.runner.SetServices(cfg.CheckServices()); err != nil {
		return err
	}
	a.mu.Lock()
	a.pub.SetApps(cfg.Publish)
	a.setProbes(cfg)
	err := a.watchAddrsLocked(nil)
	a.mu.Unlock()
	if err != nil {
		return err
	}
	a.rebuild()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		_ = a.config.Run(ctx)
	}()
	return nil
}

// Stop publishes the host as gone (the control plane and the streams have
// it when Stop returns, unless ctx ends first) and stops everything. Call
// it before the node leaves the cluster.
func (a *Agent) Stop(ctx context.Context) error {
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return nil
	}
	a.stopped = true
	a.mu.Unlock()
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	a.runner.Stop()
	err := a.pub.Stop(ctx)
	return errors.Join(err, a.seq.Close())
}

// Record is the newest record the agent published.
func (a *Agent) Record() *hivemindv1.HostRecord { return a.pub.Latest() }

// Written is the sequence number of the newest record the control plane
// acknowledged.
func (a *Agent) Written() uint64 { return a.pub.Written() }

// rebuild publishes a new record if anything it shows changed.
func (a *Agent) rebuild() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	addrs := a.cfg.Addrs()
	if len(a.cfg.Addresses) == 0 {
		addrs = a.detected
	}
	r := a.builder.Build(a.cfg, addrs, a.runner.All())
	if hostpublish.SameContent(r, a.pub.Latest()) {
		return
	}
	stamped, err := a.pub.Publish(r)
	if err != nil {
		a.log.Error("host record not published", "err", err)
		return
	}
	a.log.Debug("host record published", "seq", stamped.Seq, "hlc", hlc.Timestamp(stamped.Hlc))
}

func (a *Agent) setProbes(cfg *hostconfig.Config) {
	if a.o.Probes != nil {
		a.o.Probes(cfg.Probes)
	}
}

// applyConfig makes cfg the running configuration (it has been
// validated): new checks, published entries and address detection.
func (a *Agent) applyConfig(cfg *hostconfig.Config) {
	if err := a.runner.SetServices(cfg.CheckServices()); err != nil {
		a.log.Error("new configuration's checks not started; keeping the old ones", "err", err)
		return
	}
	a.mu.Lock()
	old := a.cfg
	a.cfg = cfg
	a.pub.SetApps(cfg.Publish)
	a.setProbes(cfg)
	if err := a.watchAddrsLocked(old); err != nil {
		a.log.Error("address detection", "err", err)
	}
	a.mu.Unlock()
	a.log.Info("configuration applied", "services", len(cfg.Services), "published", len(cfg.Publish))
	a.rebuild()
}

// watchAddrsLocked starts, restarts or stops the address watcher when the
// way addresses are found changed from old's (nil: at start); a.mu is
// held.
func (a *Agent) watchAddrsLocked(old *hostconfig.Config) error {
	detect := len(a.cfg.Addresses) == 0
	if old != nil && (len(old.Addresses) == 0) == detect && old.IncludeLoopback == a.cfg.IncludeLoopback {
		return nil
	}
	if a.addrStop != nil {
		a.addrStop()
		a.addrStop = nil
	}
	if !detect || a.ctx == nil {
		a.detected = nil
		return nil
	}
	addrs, err := harvest.HostAddrs(a.cfg, a.o.Addrs)
	if err != nil {
		return err
	}
	a.detected = addrs
	ctx, cancel := context.WithCancel(a.ctx)
	a.addrStop = cancel
	w := &harvest.AddressWatcher{
		Source: a.o.Addrs, IncludeLoopback: a.cfg.IncludeLoopback, Interval: a.o.AddressInterval,
		OnChange: func(old, new []netip.Addr) {
			a.log.Info("addresses changed", "old", old, "new", new)
			a.mu.Lock()
			if ctx.Err() == nil {
				a.detected = new
			}
			a.mu.Unlock()
			a.rebuild()
		},
		OnError: func(err error) { a.log.Warn("listing addresses failed", "err", err) },
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		_ = w.Run(ctx, slices.Clone(addrs))
	}()
	return nil
}
