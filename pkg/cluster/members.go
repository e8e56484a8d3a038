package cluster

import (
	"context"
	"crypto/ed25519"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

// How a node that is not on the control plane keeps the registry it checks
// callers against: read again when older than memberCacheTTL, so a member
// that left loses access here within twice that, and at most once per
// memberMissInterval when a caller's name is missing (a node that has just
// joined).
const (
	memberCacheTTL     = 30 * time.Second
	memberMissInterval = time.Second
	memberReadTimeout  = 5 * time.Second
)

// memberCache is the registry as this node's authentication reads it: an
// auth.Members over the control plane's registry.
type memberCache struct {
	n *Node

	read sync.Mutex // one read of the registry at a time

	refreshing atomic.Bool // a background read is under way

	mu      sync.Mutex
	byName  map[string]auth.Binding
	issuers map[string]ed25519.PublicKey // control-plane members' keys, left ones included
	fetched time.Time                    // last successful read
	tried   time.Time                    // last attempt
}

func newMemberCache(n *Node) *memberCache { return &memberCache{n: n} }

// Members returns the registry as authentication reads it.
func (n *Node) Members() auth.Members { return n.members }

// IssuerKey returns the ticket-signing key of registry entry m: the key of
// a control-plane member. A member that has left keeps it, so the tickets
// it issued stay good while it restarts.
func IssuerKey(m *hivemindv1.ClusterMember) (ed25519.PublicKey, bool) {
	if !registry.Performs(m, RoleControlPlane) || len(m.GetPublicKey()) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(m.GetPublicKey()), true
}

// issuerKey is a ticket.KeyOf over the cache. It never blocks (memberlist
// calls it): an unknown issuer starts a read of the registry in the
// background, so a control-plane member added since is known shortly.
func (c *memberCache) issuerKey(name string) (ed25519.PublicKey, bool) {
	c.mu.Lock()
	k, ok := c.issuers[name]
	c.mu.Unlock()
	if !ok {
		c.refreshInBackground()
	}
	return k, ok
}

// BindingOf returns the binding the registry entry m gives its name; ok is
// false for a member that has left.
func BindingOf(m *hivemindv1.ClusterMember) (auth.Binding, bool) {
	if m.GetState() == hivemindv1.MemberState_MEMBER_STATE_LEFT {
		return auth.Binding{}, false
	}
	return auth.Binding{PublicKey: m.GetPublicKey(), Roles: m.GetRoles().GetPerforms(), Incarnation: m.GetIncarnation()}, true
}

func (c *memberCache) fill(d *hivemindv1.MembershipDigest) {
	by := make(map[string]auth.Binding, len(d.GetMembers()))
	issuers := map[string]ed25519.PublicKey{}
	for _, m := range d.GetMembers() {
		if b, ok := BindingOf(m); ok {
			by[m.GetName()] = b
		}
		if k, ok := IssuerKey(m); ok {
			issuers[m.GetName()] = k
		}
	}
	c.mu.Lock()
	c.byName, c.issuers, c.fetched = by, issuers, time.Now()
	c.tried = c.fetched
	c.mu.Unlock()
}

// lookup returns name's binding and whether the registry should be read
// again first: it is older than memberCacheTTL, or the name is missing,
// and the last attempt is older than memberMissInterval.
func (c *memberCache) lookup(name string) (b auth.Binding, ok, stale bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok = c.byName[name]
	due := !ok || time.Since(c.fetched) >= memberCacheTTL
	return b, ok, due && time.Since(c.tried) >= memberMissInterval
}

// Binding implements auth.Members.
func (c *memberCache) Binding(ctx context.Context, name string) (auth.Binding, bool, error) {
	b, ok, stale := c.lookup(name)
	if !stale {
		return b, ok, nil
	}
	c.refresh(ctx)
	b, ok, _ = c.lookup(name)
	return b, ok, nil
}

// CachedBinding implements auth.CachedMembers: the answer from what the
// cache holds, never blocking; when it is due for a read, one starts in
// the background.
func (c *memberCache) CachedBinding(name string) (auth.Binding, bool) {
	b, ok, stale := c.lookup(name)
	if stale {
		c.refreshInBackground()
	}
	return b, ok
}

func (c *memberCache) refreshInBackground() {
	if c.refreshing.CompareAndSwap(false, true) {
		go func() {
			defer c.refreshing.Store(false)
			c.refresh(context.Background())
		}()
	}
}

// refresh reads the registry again, once for all the callers that found
// it stale at the same time. A failed read keeps what is known: callers
// are checked against the last registry the node saw.
func (c *memberCache) refresh(ctx context.Context) {
	c.read.Lock()
	defer c.read.Unlock()
	c.mu.Lock()
	if time.Since(c.tried) < memberMissInterval {
		c.mu.Unlock()
		return // another caller just did
	}
	c.tried = time.Now()
	c.mu.Unlock()
	c.n.mu.Lock()
	reg := c.n.registry
	c.n.mu.Unlock()
	if reg == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, memberReadTimeout)
	defer cancel()
	d, err := reg.List(ctx, true)
	if err != nil {
		c.n.log.Debug("reading the member registry for authentication", "err", err)
		return
	}
	c.fill(d)
}

var _ auth.CachedMembers = (*memberCache)(nil)
