package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/secret"
)

// ServerConfig configures the Auth service.
type ServerConfig struct {
	// Name of this node; it answers every challenge with it.
	Name string
	// Secret is the cluster secret.
	Secret secret.Secret
	// Tokens issues the session tokens; the Authenticator of the same
	// server must verify with the same Tokens. Nil makes a new one.
	Tokens *Tokens
	// Members is the registry the proven key is checked against. Nil: no
	// name is bound, every node is admitted to join only.
	Members Members
	// TokenTTL of issued session tokens. Default DefaultTokenTTL.
	TokenTTL time.Duration
	// ReplayCacheSize bounds the used server nonces remembered until they
	// expire. Default 16384 (≈ 500 handshakes a second over NonceTTL).
	ReplayCacheSize int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// PeerCertificates says that clients' certificates are verified (mTLS
	// on): a name bound without a key — a control-plane peer of the raft
	// configuration that has not joined the registry yet — is then admitted
	// only over a connection presenting a verified certificate naming it,
	// not on the cluster secret alone.
	PeerCertificates bool
}

// Server implements hivemind.v1.Auth.
type Server struct {
	hivemindv1.UnimplementedAuthServer
	name    string
	hs      handshake
	tokens  *Tokens
	members Members
	ttl     time.Duration
	now     func() time.Time
	used    *replayCache
	// peerCerts: see ServerConfig.PeerCertificates.
	peerCerts bool
}

// NewServer returns the Auth service for cfg.
func NewServer(cfg ServerConfig) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.ReplayCacheSize <= 0 {
		cfg.ReplayCacheSize = 16384
	}
	if cfg.Tokens == nil {
		cfg.Tokens = NewTokens(cfg.Now)
	}
	if cfg.Members == nil {
		cfg.Members = (*Directory)(nil)
	}
	return &Server{
		name:    cfg.Name,
		hs:      newHandshake(cfg.Secret),
		tokens:  cfg.Tokens,
		members: cfg.Members,
		ttl:     cfg.TokenTTL,
		now:     cfg.Now,
		used:    newReplayCache(cfg.ReplayCacheSize),

		peerCerts: cfg.PeerCertificates,
	}
}

// Tokens returns the tokens this server issues, for its Authenticator.
func (s *Server) Tokens() *Tokens { return s.tokens }

// JoinTokenTTL is how long the token of a node not yet bound lasts: long
// enough to join.
const JoinTokenTTL = time.Minute

// Challenge implements hivemindv1.AuthServer.
func (s *Server) Challenge(_ context.Context, req *hivemindv1.ChallengeRequest) (*hivemindv1.ChallengeResponse, error) {
	if err := checkNodeName("node_name", req.GetNodeName()); err != nil {
		return nil, err
	}
	if err := checkLen("client_nonce", req.GetClientNonce(), NonceSize); err != nil {
		return nil, err
	}
	sn := s.hs.newServerNonce(s.now(), req.GetNodeName(), s.name, req.GetClientNonce())
	return &hivemindv1.ChallengeResponse{
		ServerNonce: sn,
		ServerProof: s.hs.proof(labelServerProof, req.GetNodeName(), s.name, req.GetClientNonce(), sn),
		ServerName:  s.name,
	}, nil
}

// Authenticate implements hivemindv1.AuthServer.
func (s *Server) Authenticate(ctx context.Context, req *hivemindv1.AuthenticateRequest) (*hivemindv1.AuthenticateResponse, error) {
	name := req.GetNodeName()
	if err := checkNodeName("node_name", name); err != nil {
		return nil, err
	}
	if err := checkLen("client_nonce", req.GetClientNonce(), NonceSize); err != nil {
		return nil, err
	}
	if err := checkLen("server_nonce", req.GetServerNonce(), serverNonceSize); err != nil {
		return nil, err
	}
	if err := checkLen("client_proof", req.GetClientProof(), sha256.Size); err != nil {
		return nil, err
	}
	if err := checkLen("public_key", req.GetPublicKey(), ed25519.PublicKeySize); err != nil {
		return nil, err
	}
	if err := checkLen("key_signature", req.GetKeySignature(), ed25519.SignatureSize); err != nil {
		return nil, err
	}
	now := s.now()
	exp, err := s.hs.checkServerNonce(now, req.GetServerNonce(), name, s.name, req.GetClientNonce())
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	want := s.hs.proof(labelClientProof, name, s.name, req.GetClientNonce(), req.GetServerNonce())
	if !hmac.Equal(req.GetClientProof(), want) {
		return nil, status.Error(codes.Unauthenticated, "client proof does not match: the node does not hold this cluster's secret")
	}
	if !ed25519.Verify(req.GetPublicKey(), keyProofStatement(name, s.name, req.GetClientNonce(), req.GetServerNonce()), req.GetKeySignature()) {
		return nil, status.Error(codes.Unauthenticated, "key_signature does not verify with public_key: the node does not hold that key")
	}
	id := Identity{Name: name, Kind: KindNode, Key: req.GetPublicKey()}
	b, bound, err := s.members.Binding(ctx, name)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "looking up %s in the member registry: %v", name, err)
	}
	ttl := s.ttl
	switch {
	case !bound:
		// The secret admits a node once: to join, which binds its key.
		id.Joining, ttl = true, min(ttl, JoinTokenTTL)
	case b.PublicKey != nil && !SameKey(b.PublicKey, req.GetPublicKey()):
		return nil, status.Errorf(codes.PermissionDenied,
			"node name %s is bound to another key (%s, not %s): the cluster secret alone cannot take over a member's name; its own leave or an operator (Membership/Leave with admin) releases it",
			name, fingerprint(b.PublicKey), fingerprint(req.GetPublicKey()))
	case b.PublicKey == nil && s.peerCerts && verifiedLeaf(ctx) == nil:
		return nil, status.Errorf(codes.PermissionDenied,
			"node %s is a control-plane peer not yet in the registry: with mTLS it is admitted only over a connection presenting its certificate", name)
	default:
		id.Scopes, id.Roles, id.Incarnation = nodeScopes, b.Roles, b.Incarnation
	}
	// A connection presenting another node's certificate is refused here
	// already; one presenting this node's issued certificate binds the
	// token to it.
	if err := checkPeerCertificate(ctx, id); err != nil {
		return nil, err
	}
	id.CertBound = presentsIssuedCertificate(ctx, id)
	// Only a proven handshake is remembered, so callers without the secret
	// cannot fill the cache.
	switch s.used.add(string(req.GetServerNonce()), exp, now) {
	case replayed:
		return nil, status.Error(codes.Unauthenticated, "server nonce already used; start again with Challenge")
	case full:
		return nil, status.Error(codes.ResourceExhausted, "too many handshakes in the last 30s; retry shortly")
	}
	tok, texp := s.tokens.Issue(id, ttl)
	return &hivemindv1.AuthenticateResponse{Token: tok, ExpiresAt: timestamppb.New(texp)}, nil
}

func checkLen(field string, b []byte, n int) error {
	if len(b) != n {
		return status.Errorf(codes.InvalidArgument, "invalid %s: %d bytes, want %d", field, len(b), n)
	}
	return nil
}

// checkNodeName is ValidateNodeName as INVALID_ARGUMENT naming field.
func checkNodeName(field, name string) error {
	if err := ValidateNodeName(name); err != nil {
		return status.Errorf(codes.InvalidArgument, "invalid %s: %v", field, err)
	}
	return nil
}

// ValidateNodeName accepts names that are safe as a path segment under
// /nodes/ and in metadata: 1 to MaxNodeNameLen lower-case letters, digits,
// '.', '-' and '_', not "." or "..". Upper case is refused because names
// become DNS labels, which ignore case: "HOST1" would answer as "host1".
func ValidateNodeName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("must not be empty")
	case len(name) > MaxNodeNameLen:
		return fmt.Errorf("%d bytes, at most %d", len(name), MaxNodeNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a name", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			return fmt.Errorf("byte %d (%q) is upper case; names are DNS labels, which ignore case, so use lower case", i, c)
		}
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("byte %d (%q) is not a letter, digit, '.', '-' or '_'", i, c)
		}
	}
	return nil
}

type addResult int

const (
	added addResult = iota
	replayed
	full
)

// replayCache remembers used server nonces until they expire. It is
// bounded; when full of unexpired nonces it refuses new ones rather than
// forget one that could still be replayed.
type replayCache struct {
	mu    sync.Mutex
	max   int
	seen  map[string]time.Time
	order []string // insertion order; expiries are in the same order (fixed TTL)
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: map[string]time.Time{}}
}

func (c *replayCache) add(nonce string, exp, now time.Time) addResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Drop expired nonces from the front: they can no longer be answered.
	n := 0
	for n < len(c.order) && !now.Before(c.seen[c.order[n]]) {
		delete(c.seen, c.order[n])
		n++
	}
	c.order = c.order[n:]
	if _, ok := c.seen[nonce]; ok {
		return replayed
	}
	if len(c.order) >= c.max {
		return full
	}
	c.seen[nonce] = exp
	c.order = append(c.order, nonce)
	return added
}
