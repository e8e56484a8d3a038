// Package auth decides who may call what in a hivemind cluster.
//
// Nodes prove they hold the cluster secret with a mutual challenge-response
// (the Auth service, Server) and receive a short-lived session token, signed
// with a key derived from the secret, so any node verifies a token any
// other node issued. Operators present scoped API tokens from
// configuration. Both arrive as `authorization: bearer …` metadata; the
// Authenticator checks them against a Policy (one rule per gRPC method,
// unknown methods denied) and puts the caller's Identity in the context.
//
// On the client side, NodeAuth does the handshake lazily per connection,
// checks the server's proof, and keeps the token fresh; BearerToken sends a
// fixed token (operators, tests). Both plug into grpcclient.Config.Auth.
package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Kind says what sort of caller an Identity is.
type Kind int

const (
	// KindNode is a cluster node that proved the cluster secret.
	KindNode Kind = iota + 1
	// KindOperator is a person or tool with an API token.
	KindOperator
)

func (k Kind) String() string {
	switch k {
	case KindNode:
		return "node"
	case KindOperator:
		return "operator"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

func parseKind(s string) (Kind, bool) {
	switch s {
	case "node":
		return KindNode, true
	case "operator":
		return KindOperator, true
	}
	return 0, false
}

// Scope is a capability a token carries.
type Scope string

const (
	// ScopeRead reads state: Get, Range, Watch, Status, Info, reflection.
	ScopeRead Scope = "read"
	// ScopeWrite changes state: Put, Delete, Txn, events, intents.
	ScopeWrite Scope = "write"
	// ScopeAdmin changes the cluster itself (membership, compaction) and
	// implies read and write.
	ScopeAdmin Scope = "admin"
	// ScopeFilter allows registering subscriptions with a filter
	// expression, which runs on the notifier's CPU. Separate from admin.
	ScopeFilter Scope = "filter"
)

// Scopes lists every scope, in the order they are documented.
var Scopes = []Scope{ScopeRead, ScopeWrite, ScopeAdmin, ScopeFilter}

func parseScope(s string) (Scope, bool) {
	sc := Scope(s)
	return sc, slices.Contains(Scopes, sc)
}

// nodeScopes are what a node's session token carries: nodes read and write
// the cluster state but do not administer it.
var nodeScopes = []Scope{ScopeRead, ScopeWrite}

// Identity is an authenticated caller.
type Identity struct {
	// Name is the node name or the operator token's name.
	Name string
	Kind Kind
	// Scopes the caller was granted (see Has for implied scopes).
	Scopes []Scope
	// Roles a node performs, from the committed registry (controlplane,
	// host, dns, notifier). Empty for operators and for nodes not yet
	// admitted.
	Roles []string
	// Incarnation of the node in the registry its credential was issued
	// against; 0 for operators.
	Incarnation uint64
	// Key is the node's public key, proven in its handshake.
	Key []byte
	// Joining marks a node admitted with the cluster secret whose name is
	// not bound to a key in the registry yet: it may call Membership/Join
	// and nothing else.
	Joining bool
	// CertBound marks a node token issued over a connection that presented
	// the node's issued certificate: it is good only over connections
	// presenting a certificate for the same key.
	CertBound bool
}

// Role names, as nodes declare them in Roles.performs.
const (
	RoleControlPlane = "controlplane"
	RoleHost         = "host"
	RoleDNS          = "dns"
	RoleNotifier     = "notifier"
)

// IsNode reports whether the identity is the node called name.
func (id Identity) IsNode(name string) bool { return id.Kind == KindNode && id.Name == name }

// Performs reports whether the identity is a node performing role.
func (id Identity) Performs(role string) bool {
	return id.Kind == KindNode && slices.Contains(id.Roles, role)
}

// Has reports whether the identity carries scope s; admin implies read and
// write.
func (id Identity) Has(s Scope) bool {
	if slices.Contains(id.Scopes, s) {
		return true
	}
	return (s == ScopeRead || s == ScopeWrite) && slices.Contains(id.Scopes, ScopeAdmin)
}

func (id Identity) String() string {
	sc := make([]string, len(id.Scopes))
	for i, s := range id.Scopes {
		sc[i] = string(s)
	}
	return fmt.Sprintf("%s %s [%s]", id.Kind, id.Name, strings.Join(sc, ","))
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the caller's identity, put there by the
// Authenticator. ok is false for public methods and unauthenticated
// servers.
func FromContext(ctx context.Context) (id Identity, ok bool) {
	id, ok = ctx.Value(ctxKey{}).(Identity)
	return id, ok
}
