package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultTokenTTL is how long a session token is valid.
const DefaultTokenTTL = 10 * time.Minute

// tokenPrefix starts every session token and names its format version, so
// the Authenticator can tell session tokens from operator API tokens.
const tokenPrefix = "hm1."

// Token errors. Verify wraps them with detail.
var (
	ErrTokenMalformed = errors.New("malformed session token")
	ErrTokenSignature = errors.New("session token signature does not match (issued by another server or an earlier run of this one, or altered)")
	ErrTokenExpired   = errors.New("session token expired")
)

// strictB64 refuses non-zero trailing bits, so each token has exactly one
// spelling.
var strictB64 = base64.RawURLEncoding.Strict()

// Tokens issues and verifies session tokens: hm1.<payload>.<mac>, both
// parts base64url without padding, the payload JSON, the MAC HMAC-SHA256
// over "hm1.<payload>" with a key this process drew at random. Only the
// process that issued a token accepts it: a token is the session of one
// connection (NodeAuth handshakes per connection), and nothing anyone
// else holds — the cluster secret included — can mint one.
type Tokens struct {
	key []byte
	now func() time.Time
}

// NewTokens returns token signing and verification with a fresh random
// key. now is the clock; nil means time.Now.
func NewTokens(now func() time.Time) *Tokens {
	if now == nil {
		now = time.Now
	}
	key := make([]byte, sha256.Size)
	_, _ = rand.Read(key)
	return &Tokens{key: key, now: now}
}

type tokenPayload struct {
	Sub string   `json:"sub"`
	Knd string   `json:"knd"`
	Scp []string `json:"scp"`
	Rol []string `json:"rol,omitempty"`
	Inc uint64   `json:"inc,omitempty"`
	Key string   `json:"key,omitempty"`
	Jn  bool     `json:"jn,omitempty"`
	Crt bool     `json:"crt,omitempty"`
	Iat int64    `json:"iat"`
	Exp int64    `json:"exp"`
}

// Issue returns a token for id that expires after ttl (DefaultTokenTTL
// when ttl ≤ 0), and the expiry.
func (t *Tokens) Issue(id Identity, ttl time.Duration) (string, time.Time) {
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	now := t.now()
	exp := now.Add(ttl).Truncate(time.Second)
	p := tokenPayload{
		Sub: id.Name, Knd: id.Kind.String(), Rol: id.Roles, Inc: id.Incarnation, Jn: id.Joining, Crt: id.CertBound,
		Key: base64.RawURLEncoding.EncodeToString(id.Key), Iat: now.Unix(), Exp: exp.Unix(),
	}
	for _, s := range id.Scopes {
		p.Scp = append(p.Scp, string(s))
	}
	raw, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("auth: marshal token: %v", err)) // plain strings and ints
	}
	signed := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	return signed + "." + base64.RawURLEncoding.EncodeToString(t.mac(signed)), exp
}

func (t *Tokens) mac(signed string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// IsSessionToken reports whether tok has the session token format (it may
// still be invalid).
func IsSessionToken(tok string) bool { return strings.HasPrefix(tok, tokenPrefix) }

// Verify checks tok's signature and expiry and returns its identity and
// expiry.
func (t *Tokens) Verify(tok string) (Identity, time.Time, error) {
	if !IsSessionToken(tok) {
		return Identity{}, time.Time{}, fmt.Errorf("%w: does not start with %q", ErrTokenMalformed, tokenPrefix)
	}
	dot := strings.LastIndexByte(tok, '.')
	signed, macPart := tok[:dot], tok[dot+1:]
	got, err := strictB64.DecodeString(macPart)
	if err != nil || len(signed) <= len(tokenPrefix) {
		return Identity{}, time.Time{}, fmt.Errorf("%w: bad signature encoding", ErrTokenMalformed)
	}
	if !hmac.Equal(got, t.mac(signed)) {
		return Identity{}, time.Time{}, ErrTokenSignature
	}
	// Signed by a holder of the secret from here on; the checks below guard
	// against our own bugs and old formats rather than forgery.
	raw, err := strictB64.DecodeString(signed[len(tokenPrefix):])
	if err != nil {
		return Identity{}, time.Time{}, fmt.Errorf("%w: bad payload encoding", ErrTokenMalformed)
	}
	var p tokenPayload
	if err := json.Unmarshal(raw, &p); err != nil {
		return Identity{}, time.Time{}, fmt.Errorf("%w: %v", ErrTokenMalformed, err)
	}
	kind, ok := parseKind(p.Knd)
	if !ok || p.Sub == "" {
		return Identity{}, time.Time{}, fmt.Errorf("%w: bad subject or kind", ErrTokenMalformed)
	}
	key, err := strictB64.DecodeString(p.Key)
	if err != nil {
		return Identity{}, time.Time{}, fmt.Errorf("%w: bad key encoding", ErrTokenMalformed)
	}
	id := Identity{Name: p.Sub, Kind: kind, Roles: p.Rol, Incarnation: p.Inc, Key: key, Joining: p.Jn, CertBound: p.Crt}
	if len(key) == 0 {
		id.Key = nil
	}
	for _, s := range p.Scp {
		sc, ok := parseScope(s)
		if !ok {
			return Identity{}, time.Time{}, fmt.Errorf("%w: unknown scope %q", ErrTokenMalformed, s)
		}
		id.Scopes = append(id.Scopes, sc)
	}
	exp := time.Unix(p.Exp, 0)
	if now := t.now(); !now.Before(exp) {
		return Identity{}, time.Time{}, fmt.Errorf("%w at %s (%s ago)", ErrTokenExpired, exp.UTC().Format(time.RFC3339), now.Sub(exp).Truncate(time.Second))
	}
	return id, exp, nil
}
