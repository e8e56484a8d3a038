package auth

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// clientSide does the client's half of a handshake by hand, so tests can
// alter each step.
type clientSide struct {
	name  string
	hs    handshake
	key   NodeKey
	nonce []byte
}

func newClientSide(t *testing.T, name, sec string) *clientSide {
	cn := make([]byte, NonceSize)
	_, _ = rand.Read(cn)
	key := NewNodeKey()
	if name == "host-1" {
		key = testKey
	}
	return &clientSide{name: name, hs: newHandshake(mustSecret(t, sec)), key: key, nonce: cn}
}

func (c *clientSide) challenge(t *testing.T, s *Server) *hivemindv1.ChallengeResponse {
	t.Helper()
	ch, err := s.Challenge(context.Background(), &hivemindv1.ChallengeRequest{NodeName: c.name, ClientNonce: c.nonce})
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func (c *clientSide) request(ch *hivemindv1.ChallengeResponse) *hivemindv1.AuthenticateRequest {
	return &hivemindv1.AuthenticateRequest{
		NodeName: c.name, ClientNonce: c.nonce, ServerNonce: ch.GetServerNonce(),
		ClientProof:  c.hs.proof(labelClientProof, c.name, ch.GetServerName(), c.nonce, ch.GetServerNonce()),
		PublicKey:    c.key.Public(),
		KeySignature: c.key.sign(keyProofStatement(c.name, ch.GetServerName(), c.nonce, ch.GetServerNonce())),
	}
}

func (c *clientSide) serverProofOK(ch *hivemindv1.ChallengeResponse) bool {
	want := c.hs.proof(labelServerProof, c.name, ch.GetServerName(), c.nonce, ch.GetServerNonce())
	return string(want) == string(ch.GetServerProof())
}

func wantCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), contains) {
		t.Fatalf("got %v, want %s containing %q", err, code, contains)
	}
}

func TestHandshakeIssuesAVerifiableNodeToken(t *testing.T) {
	clk := newClock()
	s := NewServer(ServerConfig{Name: "srv", Members: testMembers, Secret: mustSecret(t, testSecretA), Now: clk.Now})
	c := newClientSide(t, "host-1", testSecretA)
	ch := c.challenge(t, s)
	if !c.serverProofOK(ch) || ch.GetServerName() != "srv" {
		t.Fatal("client rejects the proof of a server with the same secret")
	}
	resp, err := s.Authenticate(context.Background(), c.request(ch))
	if err != nil {
		t.Fatal(err)
	}
	// Another node with the secret verifies it.
	id, exp, err := s.Tokens().Verify(resp.GetToken())
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "host-1" || id.Kind != KindNode || !id.Has(ScopeRead) || !id.Has(ScopeWrite) || id.Has(ScopeAdmin) || id.Has(ScopeFilter) {
		t.Fatalf("identity %v", id)
	}
	if !exp.Equal(resp.GetExpiresAt().AsTime()) || exp.Sub(clk.Now()) != DefaultTokenTTL {
		t.Fatalf("expiry %v (response %v), want now+%v", exp, resp.GetExpiresAt().AsTime(), DefaultTokenTTL)
	}
}

// The secret admits a node once: a name bound in the registry answers only
// to its key, and a name not bound yet gets a token to join with and
// nothing else.
func TestHandshakeBindsTheNameToItsKey(t *testing.T) {
	clk := newClock()
	s := NewServer(ServerConfig{Name: "srv", Members: testMembers, Secret: mustSecret(t, testSecretA), Now: clk.Now})
	ctx := context.Background()

	t.Run("bound name, its key", func(t *testing.T) {
		c := newClientSide(t, "host-1", testSecretA)
		resp, err := s.Authenticate(ctx, c.request(c.challenge(t, s)))
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := s.Tokens().Verify(resp.GetToken())
		if err != nil || id.Joining || !id.Performs(RoleHost) || id.Incarnation != 1 || !SameKey(id.Key, testKey.Public()) {
			t.Fatalf("identity %+v, %v; want host-1 as a bound host with its key", id, err)
		}
	})
	t.Run("bound name, another key", func(t *testing.T) {
		c := newClientSide(t, "host-1", testSecretA)
		c.key = NewNodeKey() // the secret, but not host-1's key
		_, err := s.Authenticate(ctx, c.request(c.challenge(t, s)))
		wantCode(t, err, codes.PermissionDenied, "bound to another key")
	})
	t.Run("key not proven", func(t *testing.T) {
		c := newClientSide(t, "host-1", testSecretA)
		req := c.request(c.challenge(t, s))
		req.KeySignature = NewNodeKey().sign(keyProofStatement("host-1", "srv", c.nonce, req.GetServerNonce()))
		_, err := s.Authenticate(ctx, req)
		wantCode(t, err, codes.Unauthenticated, "key_signature")
	})
	t.Run("unbound name joins only", func(t *testing.T) {
		c := newClientSide(t, "host-9", testSecretA)
		resp, err := s.Authenticate(ctx, c.request(c.challenge(t, s)))
		if err != nil {
			t.Fatal(err)
		}
		id, exp, err := s.Tokens().Verify(resp.GetToken())
		if err != nil || !id.Joining || len(id.Roles) != 0 || id.Has(ScopeRead) || exp.Sub(clk.Now()) != JoinTokenTTL {
			t.Fatalf("identity %+v (expires %v), %v; want a join-only token of %v", id, exp, err, JoinTokenTTL)
		}
	})
}

func TestHandshakeRefusesWrongSecretOnEitherSide(t *testing.T) {
	s := NewServer(ServerConfig{Name: "srv", Members: testMembers, Secret: mustSecret(t, testSecretA)})
	// The client lacks the secret: the server refuses its proof.
	c := newClientSide(t, "host-1", testSecretB)
	ch := c.challenge(t, s)
	_, err := s.Authenticate(context.Background(), c.request(ch))
	wantCode(t, err, codes.Unauthenticated, "client proof does not match")
	// The server lacks it: the client refuses the server's proof.
	if c.serverProofOK(ch) {
		t.Fatal("client accepted the proof of a server with another secret")
	}
}

func TestHandshakeServerProofIsNotAClientProof(t *testing.T) {
	s := NewServer(ServerConfig{Name: "srv", Members: testMembers, Secret: mustSecret(t, testSecretA)})
	c := newClientSide(t, "host-1", testSecretA)
	ch := c.challenge(t, s)
	req := c.request(ch)
	req.ClientProof = ch.GetServerProof() // reflect the server's proof back
	_, err := s.Authenticate(context.Background(), req)
	wantCode(t, err, codes.Unauthenticated, "client proof")
}

func TestHandshakeRefusesTamperedExpiredAndReplayedNonces(t *testing.T) {
	clk := newClock()
	s := NewServer(ServerConfig{Name: "srv", Members: testMembers, Secret: mustSecret(t, testSecretA), Now: clk.Now})
	ctx := context.Background()
	c := newClientSide(t, "host-1", testSecretA)

	t.Run("tampered", func(t *testing.T) {
		ch := c.challenge(t, s)
		for _, i := range []int{0, serverRandSize, serverRandSize + 7, serverNonceSize - 1} {
			sn := append([]byte(nil), ch.GetServerNonce()...)
			sn[i] ^= 1
			ch2 := &hivemindv1.ChallengeResponse{ServerNonce: sn, ServerName: ch.GetServerName()}
			_, err := s.Authenticate(ctx, c.request(ch2)) // proof made over the altered nonce
			wantCode(t, err, codes.Unauthenticated, "not issued by this node")
		}
	})
	t.Run("another client's nonce", func(t *testing.T) {
		ch := c.challenge(t, s)
		other := newClientSide(t, "host-2", testSecretA)
		_, err := s.Authenticate(ctx, other.request(ch))
		wantCode(t, err, codes.Unauthenticated, "not issued by this node")
	})
	t.Run("another server's nonce", func(t *testing.T) {
		s2 := NewServer(ServerConfig{Name: "srv2", Members: testMembers, Secret: mustSecret(t, testSecretA), Now: clk.Now})
		ch := c.challenge(t, s2)
		_, err := s.Authenticate(ctx, c.request(ch))
		wantCode(t, err, codes.Unauthenticated, "not issued by this node")
	})
	t.Run("expired", func(t *testing.T) {
		ch := c.challenge(t, s)
		clk.Add(NonceTTL)
		_, err := s.Authenticate(ctx, c.request(ch))
		wantCode(t, err, codes.Unauthenticated, "expired")
	})
	t.Run("replayed", func(t *testing.T) {
		ch := c.challenge(t, s)
		req := c.request(ch)
		if _, err := s.Authenticate(ctx, req); err != nil {
			t.Fatal(err)
		}
		_, err := s.Authenticate(ctx, req)
		wantCode(t, err, codes.Unauthenticated, "already used")
	})
}

func TestHandshakeBadInputNamesTheField(t *testing.T) {
	s := NewServer(ServerConfig{Name: "srv", Members: testMembers, Secret: mustSecret(t, testSecretA)})
	ctx := context.Background()
	c := newClientSide(t, "host-1", testSecretA)
	good := c.request(c.challenge(t, s))
	for _, tc := range []struct {
		field  string
		mutate func(r *hivemindv1.AuthenticateRequest)
	}{
		{"node_name", func(r *hivemindv1.AuthenticateRequest) { r.NodeName = "" }},
		{"node_name", func(r *hivemindv1.AuthenticateRequest) { r.NodeName = "../etc" }},
		// DNS ignores case: HOST-1 would answer as host-1.
		{"node_name", func(r *hivemindv1.AuthenticateRequest) { r.NodeName = "HOST-1" }},
		{"node_name", func(r *hivemindv1.AuthenticateRequest) { r.NodeName = strings.Repeat("a", MaxNodeNameLen+1) }},
		{"client_nonce", func(r *hivemindv1.AuthenticateRequest) { r.ClientNonce = r.ClientNonce[:8] }},
		{"server_nonce", func(r *hivemindv1.AuthenticateRequest) { r.ServerNonce = nil }},
		{"client_proof", func(r *hivemindv1.AuthenticateRequest) { r.ClientProof = []byte("x") }},
		{"public_key", func(r *hivemindv1.AuthenticateRequest) { r.PublicKey = nil }},
		{"key_signature", func(r *hivemindv1.AuthenticateRequest) { r.KeySignature = r.KeySignature[:10] }},
	} {
		r := &hivemindv1.AuthenticateRequest{NodeName: good.NodeName, ClientNonce: good.ClientNonce, ServerNonce: good.ServerNonce, ClientProof: good.ClientProof, PublicKey: good.PublicKey, KeySignature: good.KeySignature}
		tc.mutate(r)
		_, err := s.Authenticate(ctx, r)
		wantCode(t, err, codes.InvalidArgument, tc.field)
	}
	_, err := s.Challenge(ctx, &hivemindv1.ChallengeRequest{NodeName: "host-1", ClientNonce: []byte("short")})
	wantCode(t, err, codes.InvalidArgument, "client_nonce")
	_, err = s.Challenge(ctx, &hivemindv1.ChallengeRequest{NodeName: "a/b", ClientNonce: c.nonce})
	wantCode(t, err, codes.InvalidArgument, "node_name")
}

func TestReplayCacheIsBounded(t *testing.T) {
	clk := newClock()
	c := newReplayCache(2)
	exp := clk.Now().Add(NonceTTL)
	if c.add("a", exp, clk.Now()) != added || c.add("b", exp, clk.Now()) != added {
		t.Fatal("not added")
	}
	if got := c.add("c", exp, clk.Now()); got != full {
		t.Fatalf("third nonce in a cache of 2: %v, want full (refused, not forgetting a live nonce)", got)
	}
	clk.Add(NonceTTL)
	if got := c.add("c", clk.Now().Add(NonceTTL), clk.Now()); got != added || len(c.seen) != 1 {
		t.Fatalf("after expiry: %v with %d remembered", got, len(c.seen))
	}
}

// Over gRPC: the client interceptor does the handshake and checks the
// server's proof.
func TestNodeAuthOverGRPC(t *testing.T) {
	ts := startServer(t, testSecretA, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call := func(sec string) error {
		conn, err := grpcclient.Dial(ts.addr, grpcclient.Config{MaxRetries: -1, Auth: NewNodeAuth("host-1", mustSecret(t, sec), testKey)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = hivemindv1.NewNodeClient(conn).Info(ctx, &hivemindv1.InfoRequest{})
		return err
	}
	if err := call(testSecretA); err != nil {
		t.Fatal(err)
	}
	// A client with another secret learns that the server's proof is wrong
	// before it sends its own.
	err := call(testSecretB)
	wantCode(t, err, codes.Unauthenticated, "server proof does not match")
	if !errors.Is(err, ErrServerProof) && !strings.Contains(err.Error(), ErrServerProof.Error()) {
		t.Fatalf("error %v does not say the server's proof failed", err)
	}
	if n := ts.auth.n.Load(); n != 1 {
		t.Fatalf("%d completed handshakes, want 1", n)
	}
}
