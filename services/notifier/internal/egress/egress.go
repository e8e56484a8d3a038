// Package egress guards the notifier's outbound connections against
// server-side request forgery: a webhook URL is chosen by whoever creates a
// subscription, so without a guard it could make the notifier talk to the
// cluster's own services, a cloud metadata endpoint or anything else on a
// private network.
//
// The check runs on the address actually dialled, after name resolution,
// in net.Dialer.Control. Checking the URL's host before the request would
// not do: a name can resolve to a public address when checked and to
// 127.0.0.1 when dialled (DNS rebinding).
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrForbidden is wrapped by every refusal, for errors.Is.
var ErrForbidden = errors.New("destination address not allowed")

// Policy says which destinations are allowed besides public unicast
// addresses. The zero value refuses every special-purpose range.
type Policy struct {
	// AllowLoopback allows 127.0.0.0/8 and ::1; the local cluster, where
	// receivers run beside the notifier, sets it.
	AllowLoopback bool
	// Allow lists prefixes that are allowed even though they fall in a
	// refused range (for example a private network where receivers live).
	Allow []netip.Prefix
}

// refused lists the ranges a webhook may not reach unless allowed.
var refused = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignments"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fc00::/7"), "unique local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// nat64 is the well-known NAT64 prefix: its addresses reach the IPv4
// address in their last 32 bits, which is what must be checked.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Check returns nil if ip may be dialled, or an error wrapping
// ErrForbidden that names the range.
func (p Policy) Check(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	if nat64.Contains(ip) {
		b := ip.As16()
		return p.Check(netip.AddrFrom4([4]byte(b[12:])))
	}
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return nil
		}
	}
	if p.AllowLoopback && ip.IsLoopback() {
		return nil
	}
	for _, r := range refused {
		if r.prefix.Contains(ip) {
			return fmt.Errorf("%w: %s is %s", ErrForbidden, ip, r.what)
		}
	}
	return nil
}

// Control is a net.Dialer Control function: it is called with the
// resolved address of every connection before it is made.
func (p Policy) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot parse %q: %v", ErrForbidden, address, err)
	}
	return p.Check(ap.Addr())
}

// Dialer returns a dialer that refuses what p refuses.
func (p Policy) Dialer() *net.Dialer {
	return &net.Dialer{Control: p.Control}
}

// ParseAllow parses an allow list from configuration: CIDR prefixes or
// single addresses; blank entries are skipped.
func ParseAllow(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("egress allow %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("egress allow %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
