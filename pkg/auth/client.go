package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/secret"
)

// NodeAuth authenticates a node's outgoing calls with the cluster secret.
// It is a grpcclient.Auth: every connection dialled with it gets its own
// session, made lazily on the first call by a handshake in which the
// server proves the secret too, refreshed before it expires, and made
// again once when a call is refused as UNAUTHENTICATED.
type NodeAuth struct {
	name string
	hs   handshake
	key  NodeKey
	now  func() time.Time
}

// NewNodeAuth returns client authentication for the node called name,
// holding the cluster secret s and its node key.
func NewNodeAuth(name string, s secret.Secret, key NodeKey) *NodeAuth {
	return &NodeAuth{name: name, hs: newHandshake(s), key: key, now: time.Now}
}

// DialOptions implements grpcclient.Auth.
func (n *NodeAuth) DialOptions() []grpc.DialOption {
	s := &session{auth: n, lock: make(chan struct{}, 1)}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(s.unary),
		grpc.WithChainStreamInterceptor(s.stream),
	}
}

// ErrServerProof means the server could not prove the cluster secret.
var ErrServerProof = errors.New("server proof does not match: the server does not hold this cluster's secret")

// session is one connection's token.
type session struct {
	auth *NodeAuth
	lock chan struct{} // one handshake at a time; waiting callers honour their context

	mu        sync.Mutex
	token     string
	refreshAt time.Time
}

func isAuthMethod(method string) bool {
	return strings.HasPrefix(method, "/"+hivemindv1.Auth_ServiceDesc.ServiceName+"/")
}

func (s *session) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if isAuthMethod(method) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	tok, err := s.get(ctx, cc, "")
	if err != nil {
		return err
	}
	err = invoker(withBearer(ctx, tok), method, req, reply, cc, opts...)
	if status.Code(err) != codes.Unauthenticated {
		return err
	}
	// The server refused a token we thought good (its clock, a new secret):
	// one fresh handshake, one more try.
	if tok, err = s.get(ctx, cc, tok); err != nil {
		return err
	}
	return invoker(withBearer(ctx, tok), method, req, reply, cc, opts...)
}

func (s *session) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if isAuthMethod(method) {
		return streamer(ctx, desc, cc, method, opts...)
	}
	tok, err := s.get(ctx, cc, "")
	if err != nil {
		return nil, err
	}
	cs, err := streamer(withBearer(ctx, tok), desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	// A stream's refusal arrives with its first receive, after messages may
	// have been sent, so it cannot be replayed here; the token is dropped so
	// the caller's next attempt gets a fresh one.
	return &watchedStream{ClientStream: cs, s: s, tok: tok}, nil
}

type watchedStream struct {
	grpc.ClientStream
	s   *session
	tok string
}

func (w *watchedStream) RecvMsg(m any) error {
	err := w.ClientStream.RecvMsg(m)
	if status.Code(err) == codes.Unauthenticated {
		w.s.drop(w.tok)
	}
	return err
}

func withBearer(ctx context.Context, tok string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "bearer "+tok)
}

func (s *session) drop(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == tok {
		s.token = ""
	}
}

// get returns a current token, doing a handshake when there is none, it is
// due for refresh, or it is stale (the one a server just refused).
func (s *session) get(ctx context.Context, cc *grpc.ClientConn, stale string) (string, error) {
	if tok, ok := s.current(stale); ok {
		return tok, nil
	}
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return "", status.FromContextError(ctx.Err()).Err()
	}
	defer func() { <-s.lock }()
	// Another caller may have finished a handshake while we waited.
	if tok, ok := s.current(stale); ok {
		return tok, nil
	}
	tok, exp, err := s.auth.handshake(ctx, cc)
	if err != nil {
		return "", err
	}
	now := s.auth.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = tok
	// Refresh after two thirds of the lifetime, leaving time for a
	// handshake before the server would refuse it.
	s.refreshAt = now.Add(exp.Sub(now) * 2 / 3)
	return tok, nil
}

func (s *session) current(stale string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == "" || s.token == stale || !s.auth.now().Before(s.refreshAt) {
		return "", false
	}
	return s.token, true
}

// handshake runs Challenge and Authenticate on cc.
func (n *NodeAuth) handshake(ctx context.Context, cc *grpc.ClientConn) (string, time.Time, error) {
	api := hivemindv1.NewAuthClient(cc)
	cn := make([]byte, NonceSize)
	_, _ = rand.Read(cn)
	ch, err := api.Challenge(ctx, &hivemindv1.ChallengeRequest{NodeName: n.name, ClientNonce: cn})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth handshake with %s: %w", cc.Target(), err)
	}
	want := n.hs.proof(labelServerProof, n.name, ch.GetServerName(), cn, ch.GetServerNonce())
	if !hmac.Equal(ch.GetServerProof(), want) {
		return "", time.Time{}, status.Errorf(codes.Unauthenticated, "auth handshake with %s (%s): %v", cc.Target(), ch.GetServerName(), ErrServerProof)
	}
	resp, err := api.Authenticate(ctx, &hivemindv1.AuthenticateRequest{
		NodeName:     n.name,
		ClientNonce:  cn,
		ServerNonce:  ch.GetServerNonce(),
		ClientProof:  n.hs.proof(labelClientProof, n.name, ch.GetServerName(), cn, ch.GetServerNonce()),
		PublicKey:    n.key.Public(),
		KeySignature: n.key.sign(keyProofStatement(n.name, ch.GetServerName(), cn, ch.GetServerNonce())),
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth handshake with %s: %w", cc.Target(), err)
	}
	return resp.GetToken(), resp.GetExpiresAt().AsTime(), nil
}

// BearerToken sends a fixed token with every call: an operator's API token,
// or a session token a test made. It is a grpcclient.Auth.
type BearerToken string

// DialOptions implements grpcclient.Auth.
func (t BearerToken) DialOptions() []grpc.DialOption {
	tok := string(t)
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withBearer(ctx, tok), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withBearer(ctx, tok), desc, cc, method, opts...)
		}),
	}
}

// CallSession is one node's session for calls over a connection it shares
// with other nodes' sessions (the fleet benchmark simulates thousands of
// hosts over a few connections). The handshake and the token are the same
// as NodeAuth's; the caller puts the token on each call with Context.
type CallSession struct {
	s  *session
	cc *grpc.ClientConn
}

// Session returns a session of this node that handshakes over cc.
func (n *NodeAuth) Session(cc *grpc.ClientConn) *CallSession {
	return &CallSession{s: &session{auth: n, lock: make(chan struct{}, 1)}, cc: cc}
}

// Context returns ctx carrying a current token of the node, handshaking
// first when there is none or it is due for refresh, and the token.
func (c *CallSession) Context(ctx context.Context) (context.Context, string, error) {
	tok, err := c.s.get(ctx, c.cc, "")
	if err != nil {
		return nil, "", err
	}
	return withBearer(ctx, tok), tok, nil
}

// Refused drops tok, which a server refused as UNAUTHENTICATED (a joining
// node's token after its join), so the next Context handshakes again.
func (c *CallSession) Refused(tok string) { c.s.drop(tok) }

// Conn is the connection the session handshakes over.
func (c *CallSession) Conn() *grpc.ClientConn { return c.cc }
