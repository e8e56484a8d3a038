// Package cptest starts control-plane clusters inside a test process: real
// replicas behind real gRPC servers on loopback, with raft either on gRPC
// too or on an in-memory network that can be partitioned. It is the one way
// integration tests start a cluster.
package cptest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/cpclient"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/services/controlplane/internal/api"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
	"github.com/hivemind/hivemind/services/controlplane/internal/replica"
)

// Options configures a test cluster.
type Options struct {
	// Faulty puts raft traffic on an in-memory network that tests can
	// partition (Cluster.Net). Client and forwarding traffic stays on gRPC.
	Faulty bool
	// Tick is the raft tick. Default 20ms (election after 10 ticks).
	Tick time.Duration
	// FSM bounds each state machine; default fsm.Config{}.
	FSM fsm.Config
	// Logger; default discards.
	Logger *slog.Logger
	// Guard checks writes at the API; nil allows every write.
	Guard api.WriteGuard
	// Auth authenticates every call to the members' gRPC servers (it puts
	// the caller's auth.Identity in the context); nil lets every call in
	// without an identity.
	Auth grpcserver.Authenticator
	// MaxRequestBytes is every member's request limit; default
	// grpcserver.DefaultMaxRequestBytes.
	MaxRequestBytes int
	// Prepare, when set, is called for each member before the cluster
	// first starts, with the initial cluster (restore tests prepare the
	// members' data directories with it).
	Prepare func(n *Node, peers []*hivemindv1.Member)
}

// Cluster is a running in-process control plane.
type Cluster struct {
	t     testing.TB
	opts  Options
	Net   *raftnode.MemNetwork
	Nodes []*Node
	peers []*hivemindv1.Member
}

// Node is one member: its replica and its gRPC server.
type Node struct {
	Name    string
	Addr    string
	Dir     string
	Replica *replica.Replica
	server  *grpcserver.Server
	api     *api.Server
	join    bool
}

// Running reports whether the node is up.
func (n *Node) Running() bool { return n.Replica != nil }

// Start starts an n-member cluster and stops it when the test ends.
func Start(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if opts.Tick == 0 {
		opts.Tick = 20 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Cluster{t: t, opts: opts}
	if opts.Faulty {
		c.Net = raftnode.NewMemNetwork()
	}
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		name := fmt.Sprintf("cp%d", i+1)
		c.Nodes = append(c.Nodes, &Node{Name: name, Addr: addr, Dir: t.TempDir()})
		c.peers = append(c.peers, &hivemindv1.Member{Name: name, PeerAddress: addr, GrpcAddress: addr})
	}
	if opts.Prepare != nil {
		for _, n := range c.Nodes {
			opts.Prepare(n, c.peers)
		}
	}
	for i := range c.Nodes {
		c.StartNode(i)
	}
	t.Cleanup(func() {
		for i := range c.Nodes {
			c.StopNode(i)
		}
	})
	return c
}

// NewMember reserves an address and a directory for a member that is not
// in the cluster yet; add it with MemberAdd, then StartNode it.
func (c *Cluster) NewMember(name string) int {
	c.t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c.Nodes = append(c.Nodes, &Node{Name: name, Addr: addr, Dir: c.t.TempDir(), join: true})
	return len(c.Nodes) - 1
}

// StartNode starts (or restarts, from its data directory) member i.
func (c *Cluster) StartNode(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	srv, err := grpcserver.New(grpcserver.Config{
		Addr: n.Addr, Logger: c.opts.Logger, Auth: c.opts.Auth,
		MaxRequestBytes: c.opts.MaxRequestBytes, InternalServices: []string{"/hivemind.raft.v1.Raft/"},
	})
	if err != nil {
		c.t.Fatal(err)
	}
	rc := raftnode.Config{DataDir: n.Dir, TickInterval: c.opts.Tick, SnapshotEvery: 200, SnapshotMargin: 50, SegmentSize: 1 << 20, Join: n.join}
	if c.Net != nil {
		rc.Transport = c.Net.Transport(replica.MemberID(n.Name))
	}
	r, err := replica.New(replica.Config{Name: n.Name, Cluster: c.peers, Raft: rc, FSM: c.opts.FSM, Logger: c.opts.Logger.With("node", n.Name)})
	if err != nil {
		srv.Stop(context.Background())
		c.t.Fatal(err)
	}
	cp := api.New(r, r.Hub(), c.opts.Guard)
	hivemindv1.RegisterControlPlaneServer(srv.GRPC(), cp)
	raftv1.RegisterRaftServer(srv.GRPC(), r.RaftService())
	if c.Net != nil {
		c.Net.Attach(replica.MemberID(n.Name), r.Node())
	}
	r.Start()
	srv.SetServing(true)
	go srv.Serve()
	n.Replica, n.server, n.api = r, srv, cp
}

// StopNode stops member i gracefully (leadership handed over).
func (c *Cluster) StopNode(i int) { c.halt(i, false) }

// CrashNode stops member i abruptly, like a killed process.
func (c *Cluster) CrashNode(i int) { c.halt(i, true) }

func (c *Cluster) halt(i int, crash bool) {
	n := c.Nodes[i]
	if n.Replica == nil {
		return
	}
	detach := func() {
		if c.Net != nil {
			c.Net.Detach(replica.MemberID(n.Name))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if crash {
		detach() // cut off first, as a killed process is
		_ = n.Replica.Crash()
		cancel()
		n.server.Stop(ctx) // ctx is done: calls are cut off at once
	} else {
		n.api.Close()           // append streams move on first, as in the binary
		_ = n.Replica.Stop(ctx) // hands leadership over while connected
		n.server.Stop(ctx)
		detach()
	}
	n.Replica, n.server, n.api = nil, nil, nil
}

// ID is member i's raft id.
func (c *Cluster) ID(i int) uint64 { return replica.MemberID(c.Nodes[i].Name) }

// Leader waits for a leader that can commit and that every running member
// follows, and returns its index.
func (c *Cluster) Leader() int {
	c.t.Helper()
	idx := -1
	c.WaitFor("a leader with a quorum that every running member follows", 10*time.Second, func() bool {
		idx = -1
		for i, n := range c.Nodes {
			if n.Replica != nil && n.Replica.Node().IsLeader() {
				if bad, _ := n.Replica.Node().Degraded(); !bad {
					idx = i
				}
			}
		}
		if idx < 0 {
			return false
		}
		lead := c.ID(idx)
		for _, n := range c.Nodes {
			if n.Replica != nil && n.Replica.Node().Leader() != lead {
				return false
			}
		}
		return true
	})
	return idx
}

// Endpoints are the gRPC addresses of every member.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, n := range c.Nodes {
		eps = append(eps, n.Addr)
	}
	return eps
}

// Client returns a client over every member, closed at the end of the test.
func (c *Cluster) Client(cfg cpclient.Config) *cpclient.Client {
	c.t.Helper()
	if cfg.Endpoints == nil {
		cfg.Endpoints = c.Endpoints()
	}
	cl, err := cpclient.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// Partition cuts raft traffic between the groups (by member index). Needs
// Options.Faulty.
func (c *Cluster) Partition(groups ...[]int) {
	var ids [][]uint64
	for _, g := range groups {
		var gid []uint64
		for _, i := range g {
			gid = append(gid, c.ID(i))
		}
		ids = append(ids, gid)
	}
	c.Net.Partition(ids...)
}

// Heal removes every partition.
func (c *Cluster) Heal() { c.Net.Heal() }

// WaitFor polls cond until it holds, failing the test after d.
func (c *Cluster) WaitFor(what string, d time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
