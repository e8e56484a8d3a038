// Package gossip is the SWIM membership every hivemind role runs: an Agent
// wraps hashicorp/memberlist with gossip encrypted by a key derived from
// the cluster secret, admits only nodes that carry a valid admission
// ticket (package ticket) for the current epoch, announces the node's
// roles, gRPC address, ticket and generation in its metadata, and keeps a
// view of every member it has seen, dead and left ones included.
//
// A role plugs in through small hooks in Config: an Observer for changes
// of the view, OnNewerEpoch for a cluster that moved to a newer epoch, and
// a PingHook for probe payloads.
package gossip

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Agent is one node's membership in the gossip pool.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	ml   *memberlist.Memberlist
	adm  *admission
	view *view
	disp *dispatcher

	mu   sync.Mutex
	meta Meta // own, as announced

	// reclaim is set when gossip shows this node's own name at another
	// address: an earlier life of this node, still believed alive.
	reclaim atomic.Bool

	stop     chan struct{}
	loopDone chan struct{}
	shutdown sync.Once
	closed   atomic.Bool
	left     atomic.Bool
}

// ErrShutdown is returned by calls on an agent that was shut down.
var ErrShutdown = errors.New("gossip: agent is shut down")

// New raises the generation in cfg.DataDir, starts gossip on the
// configured address and returns the agent, alone until Join.
func New(cfg Config) (*Agent, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if _, err := cfg.Meta.Encode(); err != nil {
		return nil, err
	}
	gen, err := raiseGeneration(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.Name)
	a := &Agent{cfg: cfg, log: log, disp: newDispatcher(), stop: make(chan struct{}), loopDone: make(chan struct{})}
	a.meta = cfg.Meta
	a.meta.Incarnation, a.meta.Leaving = gen, false
	a.view = &view{members: map[string]*Member{}, emit: a.emit}
	a.adm = &admission{
		self: cfg.Name, issuers: cfg.Issuers, log: log,
		epoch: cfg.Meta.Epoch, generation: map[string]uint64{}, lastReason: map[string]string{}, verified: map[string]verifiedTicket{},
		newer: func(epoch uint64, from string) {
			if cfg.OnNewerEpoch != nil {
				a.disp.post(func() { cfg.OnNewerEpoch(epoch, from) })
			}
		},
	}
	if cfg.Registerer != nil {
		a.adm.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hivemind_gossip_refused_total",
			Help: "Gossip messages about nodes refused admission, by reason (meta, ticket, epoch, generation).",
		}, []string{"reason"})
		if err := cfg.Registerer.Register(a.adm.refused); err != nil {
			a.disp.close()
			return nil, fmt.Errorf("gossip: register metrics: %w", err)
		}
	}

	mc := cfg.memberlistConfig()
	mc.Logger = newMemberlistLogger(log, func(name string) {
		a.view.transition(name, StateAlive, StateSuspect, EventSuspect)
	})
	d := &delegates{a}
	mc.Delegate, mc.Events, mc.Ping, mc.Conflict = d, a.view, d, d
	mc.Alive, mc.Merge = a.adm, a.adm
	ml, err := memberlist.Create(mc)
	if err != nil {
		a.disp.close()
		if cfg.Registerer != nil {
			cfg.Registerer.Unregister(a.adm.refused)
		}
		return nil, fmt.Errorf("gossip: start memberlist: %w", err)
	}
	a.ml = ml
	go a.loop()
	log.Info("gossip: started", "addr", ml.LocalNode().Address(), "generation", gen, "epoch", cfg.Meta.Epoch)
	return a, nil
}

func (a *Agent) emit(e Event) {
	if a.cfg.Observer != nil {
		a.disp.post(func() { a.cfg.Observer.MemberEvent(e) })
	}
}

// Join contacts seeds (host:port) and exchanges full state with each that
// answers. It returns how many answered; an error only when none did.
func (a *Agent) Join(seeds []string) (int, error) {
	n, err := a.ml.Join(seeds)
	if n > 0 {
		return n, nil
	}
	return 0, fmt.Errorf("gossip: join %v: %w", seeds, err)
}

// Leave announces that this node leaves, so that members record it as
// left rather than dead, and waits up to timeout for the announcement to
// go out. Call Shutdown afterwards.
//
// memberlist tells a leave from a failure only internally, so the node
// first marks itself leaving in its metadata and hands that to every
// member it knows by a direct state exchange: gossip alone could bring a
// member memberlist's leave message before the metadata, and a member
// that has a node dead ignores later news of it.
func (a *Agent) Leave(timeout time.Duration) error {
	if a.closed.Load() {
		return ErrShutdown
	}
	deadline := time.Now().Add(timeout)
	a.mu.Lock()
	a.meta.Leaving = true
	a.mu.Unlock()
	a.left.Store(true)
	if err := a.ml.UpdateNode(timeout); err != nil {
		a.log.Warn("gossip: announcing leave", "err", err)
	}
	a.exchangeWithAll(time.Until(deadline))
	// memberlist waits for ever on a timeout of 0, and the steps above may
	// have used all of it: a stop hung in Leave while the other members
	// were gone. Give it at least a moment.
	return a.ml.Leave(max(time.Until(deadline), time.Millisecond))
}

// exchangeWithAll exchanges full state with every alive member, a few at
// a time, for at most d.
func (a *Agent) exchangeWithAll(d time.Duration) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for addr := range work {
				_, _ = a.ml.Join([]string{addr})
			}
		}()
	}
	timeout := time.After(d)
feed:
	for name, m := range a.view.snapshot() {
		if name == a.cfg.Name || m.State != StateAlive {
			continue
		}
		select {
		case work <- m.Addr:
		case <-timeout:
			break feed
		}
	}
	close(work)
	wg.Wait()
}

// Shutdown stops gossip at once, without telling anyone (to others it
// looks like a failure unless Leave came first), and waits for pending
// Observer calls.
func (a *Agent) Shutdown() error {
	var err error
	a.shutdown.Do(func() {
		a.closed.Store(true)
		close(a.stop)
		<-a.loopDone
		err = a.ml.Shutdown()
		a.disp.close()
		if a.cfg.Registerer != nil {
			a.cfg.Registerer.Unregister(a.adm.refused)
		}
	})
	return err
}

// LocalNode is this node as it announces itself.
func (a *Agent) LocalNode() Member {
	m, _ := a.view.get(a.cfg.Name)
	a.mu.Lock()
	m.Meta = a.meta
	a.mu.Unlock()
	return m
}

// Members is this node's view, by name: every member it has seen since it
// started, in whatever state.
func (a *Agent) Members() map[string]Member { return a.view.snapshot() }

// Epoch is the current epoch: the highest seen on a valid ticket.
func (a *Agent) Epoch() uint64 { return a.adm.currentEpoch() }

// SetMeta replaces the announced roles and gRPC address and re-announces
// them, waiting up to timeout for the announcement to go out.
func (a *Agent) SetMeta(roles []string, grpcAddr string, timeout time.Duration) error {
	_, err := a.update(func(m *Meta) { m.Roles, m.GRPCAddr = slices.Clone(roles), grpcAddr }, timeout)
	return err
}

// SetTicket installs a ticket for epoch, as issued by a (re)join, and
// re-announces the node's metadata.
func (a *Agent) SetTicket(t []byte, epoch uint64, timeout time.Duration) error {
	// The ticket is this node's from the moment it is set; only its
	// broadcast may still be under way when the wait times out.
	applied, err := a.update(func(m *Meta) { m.Ticket, m.Epoch = slices.Clone(t), epoch }, timeout)
	if applied {
		a.adm.setOwnEpoch(epoch)
	}
	return err
}

// update changes this node's metadata and waits up to timeout for the
// change to be broadcast. applied reports whether the change was made (it
// is, even when the wait times out).
func (a *Agent) update(change func(*Meta), timeout time.Duration) (applied bool, err error) {
	if a.closed.Load() {
		return false, ErrShutdown
	}
	a.mu.Lock()
	next := a.meta
	change(&next)
	if _, err := next.Encode(); err != nil {
		a.mu.Unlock()
		return false, err
	}
	a.meta = next
	a.mu.Unlock()
	return true, a.ml.UpdateNode(timeout)
}

// loop repairs what memberlist does not: it takes this node's name back
// from an earlier life, and re-checks members it suspects so that one that
// recovered is seen as alive again without waiting for its turn to be
// probed.
func (a *Agent) loop() {
	defer close(a.loopDone)
	t := time.NewTicker(a.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		if a.reclaim.Swap(false) && !a.left.Load() {
			a.reclaimName()
		}
		for name, m := range a.view.snapshot() {
			if m.State == StateSuspect {
				a.recheck(name, m.Addr)
			}
		}
	}
}

// reclaimName exchanges full state with a few members. Once they have
// declared this node's earlier life dead, the exchange makes them take
// the name to this address (and they gossip that on); until then they
// answer with the old record again, which sets reclaim for the next try.
func (a *Agent) reclaimName() {
	var peers []string
	for name, m := range a.view.snapshot() {
		if name != a.cfg.Name && m.State == StateAlive {
			peers = append(peers, m.Addr)
		}
	}
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	if len(peers) > 3 {
		peers = peers[:3]
	}
	if len(peers) > 0 {
		_, _ = a.ml.Join(peers)
	}
}

func (a *Agent) recheck(name, addr string) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return
	}
	if rtt, err := a.ml.Ping(name, ua); err == nil {
		a.view.contact(name, rtt)
	}
}

// delegates are the memberlist callbacks that need the agent.
type delegates struct{ a *Agent }

// NodeMeta is this node's metadata, as memberlist announces it.
func (d *delegates) NodeMeta(limit int) []byte {
	d.a.mu.Lock()
	b, err := d.a.meta.Encode()
	d.a.mu.Unlock()
	if err != nil || len(b) > limit {
		panic(fmt.Sprintf("gossip: metadata checked on update does not encode: %v", errors.Join(err, ErrMeta)))
	}
	return b
}

func (d *delegates) NotifyMsg([]byte)                           {}
func (d *delegates) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegates) LocalState(join bool) []byte                { return nil }
func (d *delegates) MergeRemoteState(buf []byte, join bool)     {}

// AckPayload and NotifyPingComplete are memberlist's PingDelegate.
func (d *delegates) AckPayload() []byte {
	if d.a.cfg.Ping != nil {
		return d.a.cfg.Ping.AckPayload()
	}
	return nil
}

func (d *delegates) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.a.view.contact(other.Name, rtt)
	if d.a.cfg.Ping != nil {
		d.a.cfg.Ping.PingComplete(other.Name, rtt, payload)
	}
}

// NotifyConflict is memberlist's ConflictDelegate: a name is claimed from
// two addresses. A node that restarts elsewhere does exactly that until
// the members declare its earlier life dead; memberlist then lets the new
// address take the name, and the agent's generation check keeps the older
// life from taking it back.
func (d *delegates) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name == d.a.cfg.Name {
		d.a.reclaim.Store(true)
		d.a.log.Info("gossip: an earlier life of this node is still believed alive; reclaiming the name", "old_addr", other.Address())
		return
	}
	em, _ := DecodeMeta(existing.Meta)
	om, _ := DecodeMeta(other.Meta)
	if om.Incarnation > em.Incarnation {
		d.a.log.Info("gossip: member restarted at a new address; it takes its name once the old one is declared dead",
			"member", existing.Name, "old_addr", existing.Address(), "new_addr", other.Address(),
			"old_generation", em.Incarnation, "new_generation", om.Incarnation)
		return
	}
	d.a.log.Warn("gossip: two nodes claim one name", "member", existing.Name,
		"addr", existing.Address(), "other_addr", other.Address(),
		"generation", em.Incarnation, "other_generation", om.Incarnation)
}
