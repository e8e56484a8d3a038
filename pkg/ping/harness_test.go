package ping

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/nodeinfo"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/ticket"
)

var testSecret = func() secret.Secret {
	s, err := secret.New([]byte("hivemind ping test cluster secret"))
	if err != nil {
		panic(err)
	}
	return s
}()

// testIssuer signs the test nodes' tickets, as control-plane member cp1.
var testIssuer = ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))

// memStore is a Store in memory that counts the writes to each key.
type memStore struct {
	mu     sync.Mutex
	values map[string][]byte
	writes map[string]int
	log    []Link
}

func newMemStore() *memStore {
	return &memStore{values: map[string][]byte{}, writes: map[string]int{}}
}

func (m *memStore) Put(_ context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.values[req.GetKey()] = req.GetValue()
	m.writes[req.GetKey()]++
	var l Link
	_ = json.Unmarshal(req.GetValue(), &l)
	m.log = append(m.log, l)
	return &hivemindv1.PutResponse{Applied: true}, nil
}

func (m *memStore) Range(context.Context, *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error) {
	return &hivemindv1.RangeResponse{}, nil
}

// link returns the stored link and how many times it was written.
func (m *memStore) link(key string) (Link, int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.values[key]
	var l Link
	if ok {
		_ = json.Unmarshal(b, &l)
	}
	return l, m.writes[key], ok
}

// testNode is one member on loopback: a gossip agent and a gRPC server
// serving the Node service.
type testNode struct {
	name    string
	dataDir string
	svc     *Service
	agent   *gossip.Agent
	srv     *grpc.Server
	lis     net.Listener
	store   *memStore

	mu   sync.Mutex
	held []net.Conn // blackholed connections
}

type nodeOptions struct {
	gossip func(*gossip.Config)
	hook   func(name string, c *Coordinates) gossip.PingHook
	// blackhole: the gRPC port accepts connections and never answers.
	blackhole bool
}

// identity puts a node identity on every call, or an admin operator's
// when the call carries "x-test-admin".
func identity(ctx context.Context) context.Context {
	id := auth.Identity{Name: "peer", Kind: auth.KindNode, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}}
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("x-test-admin")) > 0 {
		id = auth.Identity{Name: "op", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeAdmin}}
	}
	return auth.NewContext(ctx, id)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func startNode(t testing.TB, name, dataDir string, o nodeOptions) *testNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{name: name, dataDir: dataDir, lis: lis, store: newMemStore()}
	n.svc, err = New(Config{
		Name: name, Role: "host", DataDir: dataDir, Links: TestLinkConfig(),
		Dial: grpcclient.Config{MaxRetries: -1},
		Exec: map[string][]string{"echo": {"sh", "-c", `printf '{"said":"%s"}' "$HIVEMIND_PROBE_WORD"`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	gc := gossip.TestConfig(name)
	gc.Secret, gc.DataDir = testSecret, dataDir
	gc.Issuers = ticket.Keys(map[string]ed25519.PublicKey{"cp1": testIssuer.Public().(ed25519.PublicKey)})
	tk, err := ticket.Sign(func(m []byte) []byte { return ed25519.Sign(testIssuer, m) }, ticket.Ticket{Name: name, Issuer: "cp1", Epoch: 1, IssuedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	gc.Meta = gossip.Meta{Roles: []string{"host"}, GRPCAddr: lis.Addr().String(), Ticket: tk, Epoch: 1}
	gc.Ping = n.svc.Coordinates()
	if o.hook != nil {
		gc.Ping = o.hook(name, n.svc.Coordinates())
	}
	if o.gossip != nil {
		o.gossip(&gc)
	}
	if n.agent, err = gossip.New(gc); err != nil {
		t.Fatal(err)
	}
	n.svc.Attach(Cluster{View: n.agent, Store: func() Store { return n.store }})
	if o.blackhole {
		go func() {
			for {
				c, err := lis.Accept()
				if err != nil {
					return
				}
				n.mu.Lock()
				n.held = append(n.held, c)
				n.mu.Unlock()
			}
		}()
	} else {
		n.srv = grpc.NewServer(
			grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				return h(identity(ctx), req)
			}),
			grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				return h(srv, wrappedStream{ss, identity(ss.Context())})
			}),
		)
		hivemindv1.RegisterNodeServer(n.srv, testNodeServer{&nodeinfo.Service{NodeName: name}, n.svc})
		go func() { _ = n.srv.Serve(lis) }()
	}
	t.Cleanup(n.stop)
	return n
}

func (n *testNode) stop() {
	_ = n.svc.Close()
	_ = n.agent.Shutdown()
	if n.srv != nil {
		n.srv.Stop()
	}
	n.lis.Close()
	n.mu.Lock()
	for _, c := range n.held {
		c.Close()
	}
	n.mu.Unlock()
}

// testNodeServer is the daemon's Node service, minus the daemon.
type testNodeServer struct {
	*nodeinfo.Service
	ping *Service
}

func (n testNodeServer) Ping(ctx context.Context, req *hivemindv1.NodePingRequest) (*hivemindv1.NodePingResponse, error) {
	return n.ping.Ping(ctx, req)
}

func (n testNodeServer) PingRequest(req *hivemindv1.PingRequestRequest, st grpc.ServerStreamingServer[hivemindv1.PingRequestResponse]) error {
	return n.ping.PingRequest(req, st)
}

func (n testNodeServer) Probe(ctx context.Context, req *hivemindv1.NodeProbeRequest) (*hivemindv1.NodeProbeResponse, error) {
	return n.ping.Probe(ctx, req)
}

func (n testNodeServer) ProbeRequest(req *hivemindv1.ProbeRequestRequest, st grpc.ServerStreamingServer[hivemindv1.ProbeRequestResponse]) error {
	return n.ping.ProbeRequest(req, st)
}

func (n testNodeServer) EstimateRTT(ctx context.Context, req *hivemindv1.EstimateRTTRequest) (*hivemindv1.EstimateRTTResponse, error) {
	return n.ping.EstimateRTT(ctx, req)
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i) }

// startCluster starts n members, joined through the first, and waits until
// every one sees all alive.
func startCluster(t testing.TB, n int, opts func(i int) nodeOptions) []*testNode {
	t.Helper()
	var nodes []*testNode
	for i := range n {
		var o nodeOptions
		if opts != nil {
			o = opts(i)
		}
		nd := startNode(t, nodeName(i), t.TempDir(), o)
		if i > 0 {
			if _, err := nd.agent.Join([]string{nodes[0].agent.LocalNode().Addr}); err != nil {
				t.Fatal(err)
			}
		}
		nodes = append(nodes, nd)
	}
	for _, nd := range nodes {
		waitFor(t, 15*time.Second, nd.name+" sees all alive", func() bool { return alive(nd.agent) == n })
	}
	return nodes
}

func alive(a *gossip.Agent) int {
	k := 0
	for _, m := range a.Members() {
		if m.State == gossip.StateAlive {
			k++
		}
	}
	return k
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		<-tick.C
	}
}

func dial(t testing.TB, n *testNode) hivemindv1.NodeClient {
	t.Helper()
	conn, err := grpc.NewClient(n.lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hivemindv1.NewNodeClient(conn)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
