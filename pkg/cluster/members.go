package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
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

	mu      sync.Mutex
	byName  map[string]auth.Binding
	fetched time.Time // last successful read
	tried   time.Time // last attempt
}

func newMemberCache(n *Node) *memberCache { return &memberCache{n: n} }

// Members returns the registry as authentication reads it.
func (n *Node) Members() auth.Members { return n.members }

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
	for _, m := range d.GetMembers() {
		if b, ok := BindingOf(m); ok {
			by[m.GetName()] = b
		}
	}
	c.mu.Lock()
	c.byName, c.fetched = by, time.Now()
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
