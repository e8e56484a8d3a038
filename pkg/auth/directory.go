package auth

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Binding is what the member registry says of a name that is bound.
type Binding struct {
	// PublicKey the name is bound to. Nil only for a control-plane peer
	// named in the raft configuration that has not joined the registry
	// yet (the bootstrap window, see docs/security.md): any key proves it.
	PublicKey []byte
	// Roles the member performs.
	Roles []string
	// Incarnation in the registry.
	Incarnation uint64
}

// Members looks names up in the member registry. The control plane reads
// its own replica; other roles a cache of the control plane's registry.
type Members interface {
	// Binding returns the binding of name; ok is false when the name is
	// not bound (never joined, left, or removed).
	Binding(ctx context.Context, name string) (b Binding, ok bool, err error)
}

// CachedMembers is a Members that can also answer from what it holds,
// without reading anything. The per-call check runs before a request is
// read, on the connection's reader (grpcserver's tap), where it must not
// block; it uses CachedBinding when the registry offers it.
type CachedMembers interface {
	Members
	CachedBinding(name string) (b Binding, ok bool)
}

// Directory is the registry as authentication sees it: a Members that a
// role plugs in once it has one. Until then no name is bound, so nodes are
// admitted to join and nothing else.
type Directory struct {
	src atomic.Pointer[membersBox]
}

type membersBox struct{ m Members }

// NewDirectory returns a directory without a source.
func NewDirectory() *Directory { return &Directory{} }

// Set plugs in the registry.
func (d *Directory) Set(m Members) { d.src.Store(&membersBox{m: m}) }

// Binding implements Members.
func (d *Directory) Binding(ctx context.Context, name string) (Binding, bool, error) {
	if d == nil {
		return Binding{}, false, nil
	}
	box := d.src.Load()
	if box == nil {
		return Binding{}, false, nil
	}
	return box.m.Binding(ctx, name)
}

// cached is Binding without blocking, where the source can.
func (d *Directory) cached(ctx context.Context, name string) (Binding, bool, error) {
	if box := d.src.Load(); box != nil {
		if c, ok := box.m.(CachedMembers); ok {
			b, ok := c.CachedBinding(name)
			return b, ok, nil
		}
	}
	return d.Binding(ctx, name)
}

// errNotMember is why a node credential stopped being good.
var errNotMember = errors.New("not a member")

// checkMember is the per-call check of a node's token against the
// registry: the name must still be bound, to the key the token proved.
func (d *Directory) checkMember(ctx context.Context, id Identity) error {
	b, ok, err := d.cached(ctx, id.Name)
	if err != nil {
		return status.Errorf(codes.Unavailable, "checking node %s against the member registry: %v", id.Name, err)
	}
	if !ok {
		return status.Errorf(codes.Unauthenticated, "node %s: %v (left or removed); join again", id.Name, errNotMember)
	}
	if b.PublicKey != nil && !SameKey(b.PublicKey, id.Key) {
		return status.Errorf(codes.Unauthenticated, "node %s is bound to another key now; authenticate again", id.Name)
	}
	return nil
}

func fingerprint(key []byte) string {
	if len(key) < 6 {
		return fmt.Sprintf("%x", key)
	}
	return fmt.Sprintf("%x…", key[:6])
}

// StaticMembers is a fixed registry: names bound to keys and roles, for
// tests and tools that run nodes without a control plane.
type StaticMembers map[string]Binding

// Binding implements Members.
func (s StaticMembers) Binding(_ context.Context, name string) (Binding, bool, error) {
	b, ok := s[name]
	return b, ok, nil
}
