package auth

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"google.golang.org/grpc/metadata"

	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/pkg/nodeinfo"
	"github.com/hivemind/hivemind/pkg/secret"
)

const (
	testSecretA = "cluster-secret-A-0123456789"
	testSecretB = "cluster-secret-B-0123456789"
)

// testKey is host-1's node key, bound in testMembers.
var testKey = NewNodeKey()

var testMembers = StaticMembers{"host-1": {PublicKey: testKey.Public(), Roles: []string{RoleHost}, Incarnation: 1}}

func mustSecret(t testing.TB, s string) secret.Secret {
	t.Helper()
	sec, err := secret.New([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// clock is a settable clock for expiry tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingAuth counts completed handshakes.
type countingAuth struct {
	*Server
	n atomic.Int32
}

func (c *countingAuth) Authenticate(ctx context.Context, req *hivemindv1.AuthenticateRequest) (*hivemindv1.AuthenticateResponse, error) {
	resp, err := c.Server.Authenticate(ctx, req)
	if err == nil {
		c.n.Add(1)
	}
	return resp, err
}

type testServer struct {
	addr  string
	auth  *countingAuth
	authn *Authenticator
	srv   *grpcserver.Server
}

// startServer serves Auth and Node/Info for node "srv" on loopback, with
// operators (may be nil) and now as its clock (nil: time.Now).
func startServer(t testing.TB, sec string, operators *APITokens, now func() time.Time) *testServer {
	t.Helper()
	s := mustSecret(t, sec)
	tokens := NewTokens(now)
	members := NewDirectory()
	members.Set(testMembers)
	authn := NewAuthenticator(NewPolicy(), tokens, operators, members)
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Auth: authn, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ca := &countingAuth{Server: NewServer(ServerConfig{Name: "srv", Secret: s, Now: now, Tokens: tokens, Members: members})}
	hivemindv1.RegisterAuthServer(srv.GRPC(), ca)
	hivemindv1.RegisterNodeServer(srv.GRPC(), &nodeinfo.Service{Role: "test", NodeName: "srv", Started: time.Now()})
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	return &testServer{addr: srv.Addr(), auth: ca, authn: authn, srv: srv}
}

func incoming(kv ...string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
}

func withIncomingBearer(tok string) context.Context { return incoming("authorization", "bearer "+tok) }
