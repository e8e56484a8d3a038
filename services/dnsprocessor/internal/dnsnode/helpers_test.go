package dnsnode

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

const testToken = "hmo_dnsnode-test-operator-token"

// switchable is a control plane a test can take away and give back.
type switchable struct{ cp atomic.Pointer[ControlPlane] }

func (s *switchable) set(cp ControlPlane) { s.cp.Store(&cp) }

func (s *switchable) get() ControlPlane {
	if p := s.cp.Load(); p != nil {
		return *p
	}
	return nil
}

// down is a control plane that has lost its quorum.
type down struct{}

func (down) Range(context.Context, *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error) {
	return nil, status.Error(codes.Unavailable, "no quorum")
}

func (down) Watch(context.Context, *hivemindv1.WatchRequest, func(*hivemindv1.WatchResponse) error) error {
	return status.Error(codes.Unavailable, "no quorum")
}

func (down) Status(context.Context) (*hivemindv1.StatusResponse, error) {
	return nil, status.Error(codes.Unavailable, "no quorum")
}

// testKeys are the test nodes' identity keys, one per name.
var testKeys sync.Map

func testKey(name string) auth.NodeKey {
	k, _ := testKeys.LoadOrStore(name, auth.NewNodeKey())
	return k.(auth.NodeKey)
}

// testRegistry binds every test node's name to its key, as dns processors.
type testRegistry struct{}

func (testRegistry) Binding(_ context.Context, name string) (auth.Binding, bool, error) {
	return auth.Binding{PublicKey: testKey(name).Public(), Roles: []string{auth.RoleDNS}}, true, nil
}

// testNode is an in-process dns processor with its gRPC API served with
// authentication, as the binary serves it.
type testNode struct {
	*Node
	GRPC   string
	Client hivemindv1.DNSProcessorClient
}

// startNode starts a node; sec is the cluster secret nodes authenticate
// with (a zero one makes a fresh secret).
func startNode(t *testing.T, name string, cp *switchable, peers func() []Peer, sec secret.Secret) *testNode {
	t.Helper()
	if !sec.Valid() {
		var err error
		if sec, err = secret.New([]byte("dnsnode-test-secret-0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	ops, err := auth.LoadAPITokens("ops="+testToken+":read,write", "")
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokens(nil)
	members := auth.NewDirectory()
	members.Set(testRegistry{})
	authn := auth.NewAuthenticator(auth.NewPolicy(), tokens, ops, members)
	for m, r := range Rules {
		authn.Policy().Set(m, r)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", name)
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Logger: log, Auth: testNodes{authn}})
	if err != nil {
		t.Fatal(err)
	}
	hivemindv1.RegisterAuthServer(srv.GRPC(), auth.NewServer(auth.ServerConfig{Name: name, Secret: sec, Tokens: tokens, Members: members}))
	n, err := New(Config{
		DNSAddr:       "127.0.0.1:0",
		ControlPlane:  cp.get,
		Peers:         peers,
		RetryInterval: 100 * time.Millisecond,
		DialPeer: func(addr string) (hivemindv1.DNSProcessorClient, func() error, error) {
			conn, err := grpcclient.Dial(addr, grpcclient.Config{Auth: auth.NewNodeAuth(name, sec, testKey(name)), MaxRetries: -1})
			if err != nil {
				return nil, nil, err
			}
			return hivemindv1.NewDNSProcessorClient(conn), conn.Close, nil
		},
		Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.Register(srv.GRPC())
	go srv.Serve()
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	conn, err := grpcclient.Dial(srv.Addr(), grpcclient.Config{Auth: auth.BearerToken(testToken), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close()
		n.Stop(ctx)
		srv.Stop(ctx)
	})
	return &testNode{Node: n, GRPC: srv.Addr(), Client: hivemindv1.NewDNSProcessorClient(conn)}
}

// waitState waits, on the state's own notifications, until cond holds.
func waitState(t *testing.T, n *Node, what string, cond func(*hoststate.Snapshot) bool) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		snap, next := n.State().Watch()
		if cond(snap) {
			return
		}
		select {
		case <-next:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitFor polls cond (a network answer, which has no notification) until
// it holds, failing after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		<-tick.C
	}
}

func served(snap *hoststate.Snapshot, host, addr string) bool {
	h, ok := snap.Host(host)
	return ok && !h.Failed && len(h.Addrs) > 0 && h.Addrs[0].String() == addr
}

func hostRecord(node string, seq uint64, addr string) *hivemindv1.HostRecord {
	return &hivemindv1.HostRecord{
		Node: node, Addresses: []string{addr}, Seq: seq, Hlc: seq << 16,
		Meta: map[string]string{"rack": "r1"},
		Services: []*hivemindv1.ServiceInstance{{
			Name: "web", Port: 80, Status: hivemindv1.HealthStatus_HEALTH_STATUS_PASSING,
		}},
	}
}

// putHost writes a record the way a host agent does: the deterministic
// marshal at /nodes/<node>/host, stamped with the record's HLC. It returns
// the revision of the write.
func putHost(t *testing.T, c *clustertest.Cluster, rec *hivemindv1.HostRecord) int64 {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.ControlPlane().Put(ctx, &hivemindv1.PutRequest{Key: hostKey(rec.GetNode()), Value: b, Hlc: rec.GetHlc()})
	if err != nil {
		t.Fatalf("put %s: %v", rec.GetNode(), err)
	}
	return resp.GetHeader().GetRevision()
}

// query asks the node's DNS server over UDP.
func query(t *testing.T, n *Node, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, n.DNSAddr())
	if err != nil {
		t.Fatalf("dig %s: %v", name, err)
	}
	return r
}

// answerA is the A addresses of an answer, in order.
func answerA(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// testNodes authenticates the nodes a test plays: a call with the bearer
// token nodeToken(name, roles...) is that node performing those roles, as
// a session token issued after its join says; every other call goes to
// the real Authenticator.
type testNodes struct{ real *auth.Authenticator }

const nodeTokenPrefix = "test-node."

func nodeToken(name string, roles ...string) string {
	return nodeTokenPrefix + name + "." + strings.Join(roles, ",")
}

func (a testNodes) Authenticate(ctx context.Context, method string) (context.Context, error) {
	for _, v := range metadata.ValueFromIncomingContext(ctx, "authorization") {
		if rest, ok := strings.CutPrefix(v, "bearer "+nodeTokenPrefix); ok {
			name, roles, _ := strings.Cut(rest, ".")
			return auth.NewContext(ctx, auth.Identity{Name: name, Kind: auth.KindNode,
				Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}, Roles: strings.Split(roles, ",")}), nil
		}
	}
	return a.real.Authenticate(ctx, method)
}

// client calls n as the node name performing roles.
func (n *testNode) clientAs(t *testing.T, name string, roles ...string) hivemindv1.DNSProcessorClient {
	t.Helper()
	conn, err := grpcclient.Dial(n.GRPC, grpcclient.Config{Auth: auth.BearerToken(nodeToken(name, roles...)), MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hivemindv1.NewDNSProcessorClient(conn)
}

// pushAs pushes recs on one stream as the host node name.
func (n *testNode) pushAs(t *testing.T, name string, recs ...*hivemindv1.HostRecord) (*hivemindv1.PushHostsResponse, error) {
	t.Helper()
	return push(t, n.clientAs(t, name, auth.RoleHost), recs...)
}

func push(t *testing.T, c hivemindv1.DNSProcessorClient, recs ...*hivemindv1.HostRecord) (*hivemindv1.PushHostsResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := c.PushHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := stream.Send(&hivemindv1.PushHostsRequest{Host: r}); err != nil {
			break // the server ended the stream; CloseAndRecv says why
		}
	}
	return stream.CloseAndRecv()
}
