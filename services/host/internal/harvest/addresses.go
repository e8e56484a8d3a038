// Package harvest watches what the host agent publishes about its own
// machine — its addresses and its configuration file — and reports each
// change through a callback; the agent turns them into events and
// re-registration. Both watchers poll: a poll costs little at these rates,
// works on every platform and in every container, and cannot miss a change
// the way a dropped notification can.
package harvest

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/clock"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

// DefaultAddressInterval is how often the address watcher polls.
const DefaultAddressInterval = 5 * time.Second

// AddrSource lists the addresses of the host's interfaces that are up.
type AddrSource func() ([]netip.Addr, error)

// SystemAddrs is the AddrSource of the running machine.
func SystemAddrs() ([]netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(p.IP); ok {
					out = append(out, ip.Unmap())
				}
			}
		}
	}
	return out, nil
}

// SelectAddrs picks the addresses worth publishing from all: no link-local,
// multicast or unspecified addresses (they mean nothing on another
// machine), and loopback only if includeLoopback or if nothing else is left
// (a laptop on a plane still answers for itself). Sorted, IPv4 first,
// without duplicates.
func SelectAddrs(all []netip.Addr, includeLoopback bool) []netip.Addr {
	var usable, loop []netip.Addr
	for _, a := range all {
		a = a.Unmap().WithZone("")
		switch {
		case !a.IsValid(), a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalUnicast():
		case a.IsLoopback():
			loop = append(loop, a)
		default:
			usable = append(usable, a)
		}
	}
	if includeLoopback || len(usable) == 0 {
		usable = append(usable, loop...)
	}
	slices.SortFunc(usable, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(usable)
}

// HostAddrs is what the host publishes: the configured addresses if there
// are any, else the selection from src (nil: SystemAddrs).
func HostAddrs(c *hostconfig.Config, src AddrSource) ([]netip.Addr, error) {
	if len(c.Addresses) > 0 {
		return c.Addrs(), nil
	}
	if src == nil {
		src = SystemAddrs
	}
	all, err := src()
	if err != nil {
		return nil, err
	}
	return SelectAddrs(all, c.IncludeLoopback), nil
}

// AddressWatcher polls the host's addresses and reports when the selection
// changes. Run it only when addresses are detected, not configured.
type AddressWatcher struct {
	Source          AddrSource    // nil: SystemAddrs
	IncludeLoopback bool          // as in the configuration
	Interval        time.Duration // <= 0: DefaultAddressInterval
	Clock           clock.Clock   // nil: the wall clock
	// OnChange gets the previous and the new selection.
	OnChange func(old, new []netip.Addr)
	// OnError is told when listing fails (once until it works again).
	OnError func(error)
}

// Run polls until ctx ends, starting from initial (what the agent
// published), and returns ctx's error.
func (w *AddressWatcher) Run(ctx context.Context, initial []netip.Addr) error {
	src, iv, clk := w.Source, w.Interval, w.Clock
	if src == nil {
		src = SystemAddrs
	}
	if iv <= 0 {
		iv = DefaultAddressInterval
	}
	if clk == nil {
		clk = clock.Real{}
	}
	current := slices.Clone(initial)
	failing := false
	for {
		t := clk.NewTimer(iv)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
		all, err := src()
		if err != nil {
			if !failing && w.OnError != nil {
				w.OnError(err)
			}
			failing = true
			continue
		}
		failing = false
		next := SelectAddrs(all, w.IncludeLoopback)
		if slices.Equal(next, current) {
			continue
		}
		old := current
		current = next
		if w.OnChange != nil {
			w.OnChange(old, slices.Clone(next))
		}
	}
}
