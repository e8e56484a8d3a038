// Package raftnodetest starts raft clusters inside a test process. It is the
// one way raftnode's tests start a cluster: NewCluster builds n members on
// temporary directories, connected either by the fault-injecting in-memory
// network (the default, so tests can cut links) or by real gRPC on
// 127.0.0.1 (WithGRPC), and stops them when the test ends.
//
// Members can be stopped, crashed, restarted from their directories, added
// as learners and removed, so the same helper covers elections, restarts,
// partitions and membership changes. List is a trivial state machine to run
// in it.
package raftnodetest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
)

// Option adjusts a cluster.
type Option func(*options)

type options struct {
	grpc   bool
	config func(*raftnode.Config)
	logger *slog.Logger
}

// WithGRPC carries raft traffic over real gRPC on loopback instead of the
// in-memory network (Cluster.Net is then nil).
func WithGRPC() Option { return func(o *options) { o.grpc = true } }

// WithConfig lets a test adjust every member's configuration, after the
// test preset (raftnode.TestConfig) and before the node is built.
func WithConfig(fn func(*raftnode.Config)) Option { return func(o *options) { o.config = fn } }

// WithLogger logs what the members say; by default they are silent.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Cluster is a set of raft members running in this process. Its methods
// must be called from the test goroutine.
type Cluster struct {
	T testing.TB
	// Net is the in-memory network (nil WithGRPC): Partition, Cut, SetDrop,
	// SetDelay, Heal.
	Net *raftnode.MemNetwork

	opts    options
	newSM   func() raftnode.StateMachine
	members map[uint64]*hivemindv1.Member
	initial []*hivemindv1.Member
	dirs    map[uint64]string
	nodes   map[uint64]*raftnode.Node
	sms     map[uint64]raftnode.StateMachine
	servers map[uint64]*peerServer
}

// NewCluster starts an n-member cluster (ids 1..n) whose members each run a
// state machine made by newSM, waits until it has a leader, and stops it when
// the test ends.
func NewCluster(t testing.TB, n int, newSM func() raftnode.StateMachine, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{
		T: t, newSM: newSM,
		members: map[uint64]*hivemindv1.Member{}, dirs: map[uint64]string{},
		nodes: map[uint64]*raftnode.Node{}, sms: map[uint64]raftnode.StateMachine{},
		servers: map[uint64]*peerServer{},
	}
	for _, o := range opts {
		o(&c.opts)
	}
	if c.opts.logger == nil {
		c.opts.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if !c.opts.grpc {
		c.Net = raftnode.NewMemNetwork()
	}
	t.Cleanup(c.close)
	for i := 1; i <= n; i++ {
		c.initial = append(c.initial, c.newMember(uint64(i)))
	}
	for _, m := range c.initial {
		c.start(m.GetId(), false)
	}
	c.Leader()
	return c
}

// newMember allocates a directory and an address for member id.
func (c *Cluster) newMember(id uint64) *hivemindv1.Member {
	m := &hivemindv1.Member{Id: id, Name: fmt.Sprintf("n%d", id), PeerAddress: fmt.Sprintf("mem-%d", id)}
	if c.opts.grpc {
		s := newPeerServer(c.T)
		c.servers[id] = s
		m.PeerAddress = s.addr
	}
	c.dirs[id] = c.T.TempDir()
	c.members[id] = m
	return m
}

func (c *Cluster) start(id uint64, join bool) {
	c.T.Helper()
	cfg := raftnode.TestConfig(id, c.dirs[id], c.initial)
	cfg.Join = join
	cfg.Logger = c.opts.logger.With("member", c.members[id].GetName())
	if c.Net != nil {
		cfg.Transport = c.Net.Transport(id)
	}
	if c.opts.config != nil {
		c.opts.config(&cfg)
	}
	sm := c.newSM()
	n, err := raftnode.New(cfg, sm)
	if err != nil {
		c.T.Fatalf("start member %d: %v", id, err)
	}
	if c.Net != nil {
		c.Net.Attach(id, n)
	} else {
		c.servers[id].node.Store(n)
	}
	n.Start()
	c.nodes[id], c.sms[id] = n, sm
}

// Node returns running member id, or nil.
func (c *Cluster) Node(id uint64) *raftnode.Node { return c.nodes[id] }

// SM returns the state machine of member id's latest run.
func (c *Cluster) SM(id uint64) raftnode.StateMachine { return c.sms[id] }

// List returns member id's state machine when the cluster runs Lists.
func (c *Cluster) List(id uint64) *List {
	l, _ := c.sms[id].(*List)
	return l
}

// Running lists the ids of the running members.
func (c *Cluster) Running() []uint64 {
	ids := make([]uint64, 0, len(c.nodes))
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return ids
}

// Leader waits (up to 10s) for a running member that leads with a quorum
// and returns it.
func (c *Cluster) Leader() *raftnode.Node {
	c.T.Helper()
	var lead *raftnode.Node
	WaitFor(c.T, "a leader with a quorum", 10*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.IsLeader() {
				if bad, _ := n.Degraded(); !bad {
					lead = n
					return true
				}
			}
		}
		return false
	})
	return lead
}

// Propose proposes data on the current leader, trying again while
// leadership moves (ErrNotLeader, ErrProposalDropped, ErrNoQuorum), for up
// to 10s.
func (c *Cluster) Propose(data []byte) (any, error) {
	c.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		lead := c.Leader()
		res, err := lead.Propose(ctx, data, nil)
		if errors.Is(err, raftnode.ErrNoQuorum) && c.appliedAfterAll(lead.ID(), string(data)) {
			// The quorum looked lost while the entry was in flight (a
			// busy machine delays heartbeats), but it committed: a retry
			// would apply it twice.
			return nil, nil
		}
		retry := errors.Is(err, raftnode.ErrNotLeader) || errors.Is(err, raftnode.ErrProposalDropped) || errors.Is(err, raftnode.ErrNoQuorum)
		if !retry || ctx.Err() != nil {
			return res, err
		}
	}
}

// appliedAfterAll reports whether a List member id applies item within a
// few seconds: a proposal failed with ErrNoQuorum may still have been
// committed, and then must not be proposed again. Clusters of other state
// machines cannot tell, and report false.
func (c *Cluster) appliedAfterAll(id uint64, item string) bool {
	l := c.List(id)
	if l == nil {
		return false
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if l.Has(item) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// Stop stops member id gracefully: it hands leadership over while still
// connected, then leaves the network.
func (c *Cluster) Stop(id uint64) {
	c.T.Helper()
	n, ok := c.nodes[id]
	if !ok {
		return
	}
	if err := n.Stop(context.Background()); err != nil {
		c.T.Errorf("stop member %d: %v", id, err)
	}
	c.detach(id)
}

// Crash stops member id as a killed process would: cut off first, then
// halted without a handover.
func (c *Cluster) Crash(id uint64) {
	c.T.Helper()
	n, ok := c.nodes[id]
	if !ok {
		return
	}
	c.detach(id)
	if err := n.Crash(); err != nil {
		c.T.Errorf("crash member %d: %v", id, err)
	}
}

func (c *Cluster) detach(id uint64) {
	if c.Net != nil {
		c.Net.Detach(id)
	} else {
		c.servers[id].node.Store(nil)
	}
	delete(c.nodes, id)
}

// Restart starts a stopped member again from its directory, with a fresh
// state machine that it restores from its own disk.
func (c *Cluster) Restart(id uint64) {
	c.T.Helper()
	if _, running := c.nodes[id]; running {
		c.T.Fatalf("member %d is running", id)
	}
	c.start(id, !c.isInitial(id))
}

func (c *Cluster) isInitial(id uint64) bool {
	for _, m := range c.initial {
		if m.GetId() == id {
			return true
		}
	}
	return false
}

// AddLearner adds a new member id to the running cluster as a learner (the
// leader's AddLearner) and starts it. Unless the configuration disables it,
// the leader promotes it once it has caught up.
func (c *Cluster) AddLearner(id uint64) *raftnode.Node {
	c.T.Helper()
	if _, ok := c.members[id]; ok {
		c.T.Fatalf("member %d exists", id)
	}
	m := c.newMember(id)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Leader().AddLearner(ctx, m); err != nil {
		c.T.Fatalf("add learner %d: %v", id, err)
	}
	c.start(id, true)
	return c.nodes[id]
}

// Member returns the member id as the leader knows it (nil if it is not a
// member).
func (c *Cluster) Member(id uint64) *hivemindv1.Member {
	for _, m := range c.Leader().Members() {
		if m.GetId() == id {
			return m
		}
	}
	return nil
}

func (c *Cluster) close() {
	for id := range c.nodes {
		c.Stop(id)
	}
	for _, s := range c.servers {
		s.srv.Stop()
	}
}

// WaitFor polls cond until it holds, failing the test after d.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// peerRecvLimit is the smallest receive limit a member can have
// (--max-request-bytes at its minimum), so raft traffic in these tests
// crosses a limit that is tighter than any real one.
const peerRecvLimit = grpcserver.MinMaxRequestBytes + grpcserver.EnvelopeBytes

// peerServer is one member's gRPC endpoint. It outlives the member's runs,
// so a restarted member keeps its address.
type peerServer struct {
	raftv1.UnimplementedRaftServer
	addr string
	srv  *grpc.Server
	node atomic.Pointer[raftnode.Node]
}

func newPeerServer(t testing.TB) *peerServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &peerServer{addr: l.Addr().String(), srv: grpc.NewServer(grpc.MaxRecvMsgSize(peerRecvLimit))}
	raftv1.RegisterRaftServer(s.srv, s)
	go s.srv.Serve(l)
	return s
}

// Send implements raftv1.RaftServer.
func (s *peerServer) Send(stream raftv1.Raft_SendServer) error {
	n := s.node.Load()
	if n == nil {
		return status.Error(codes.Unavailable, "member is down")
	}
	return n.ServeSend(stream, 0)
}
