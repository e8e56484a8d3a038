package members

import (
	"context"
	"crypto/ed25519"
	"sync"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cluster"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
)

// Bindings is the registry as a control-plane member's authentication
// reads it: straight from the local replica, so a member that leaves or is
// removed is refused here as soon as this member has applied it.
type Bindings struct {
	Machine *fsm.Machine
	// IsPeer reports whether a name is a control-plane member of the raft
	// configuration. Such a member is known before it has joined the
	// registry (when the cluster bootstraps); until then any key proves it.
	IsPeer func(name string) bool

	mu    sync.Mutex
	cache map[string]decoded
}

// decoded is a registry entry's binding at the revision it was written.
type decoded struct {
	rev int64
	b   auth.Binding
	ok  bool
}

var _ auth.Members = (*Bindings)(nil)

// Binding implements auth.Members.
func (b *Bindings) Binding(_ context.Context, name string) (auth.Binding, bool, error) {
	if kv, found, _ := b.Machine.Get(registry.Key(name)); found {
		if d, ok := b.entry(name, kv.GetModRevision(), kv.GetValue()); ok {
			return d, true, nil
		}
	}
	if b.IsPeer != nil && b.IsPeer(name) {
		return auth.Binding{Roles: []string{auth.RoleControlPlane}}, true, nil
	}
	return auth.Binding{}, false, nil
}

// IssuerKey is a ticket.KeyOf over the local replica: the key of a
// control-plane member (one that has left included, so its tickets stay
// good while it restarts).
func (b *Bindings) IssuerKey(name string) (ed25519.PublicKey, bool) {
	m, ok := b.Machine.Member(name)
	if !ok {
		return nil, false
	}
	return cluster.IssuerKey(m)
}

// entry decodes a registry value once per revision: the check runs on
// every call a node makes.
func (b *Bindings) entry(name string, rev int64, value []byte) (auth.Binding, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d, ok := b.cache[name]; ok && d.rev == rev {
		return d.b, d.ok
	}
	var d decoded
	if m, err := registry.Decode(value); err == nil {
		d.b, d.ok = cluster.BindingOf(m)
	}
	d.rev = rev
	if b.cache == nil {
		b.cache = map[string]decoded{}
	}
	b.cache[name] = d
	return d.b, d.ok
}
