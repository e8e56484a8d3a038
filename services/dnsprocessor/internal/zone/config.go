package zone

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// DefaultOrigin is the zone hivemind serves unless configured otherwise.
const DefaultOrigin = "hive."

// TTLs are the time-to-live values, in seconds, of the records in the zone.
// None of them is 0 by default: a zero TTL makes every resolver ask again
// for every lookup.
type TTLs struct {
	// Node is for <node>.node.<zone> A, AAAA and TXT (default 10).
	Node uint32
	// Service is for <service>.service.<zone> records, which change with
	// health checks (default 5).
	Service uint32
	// Apex is for the SOA and NS records at the apex (default 3600).
	Apex uint32
	// Negative is how long NXDOMAIN and NODATA answers may be cached: the
	// TTL and MINIMUM of the SOA in their authority section (RFC 2308;
	// default 5, so a new host is found within seconds).
	Negative uint32
}

// NameServer is one NS record at the apex, with the addresses answered for
// it when its name is inside the zone (glue).
type NameServer struct {
	Name  string
	Addrs []netip.Addr
}

// Config says how a snapshot of hosts becomes a zone.
type Config struct {
	// Origin is the zone's name (default "hive.").
	Origin string
	// NameServers are the NS records at the apex; the first is the SOA's
	// MNAME (default one: ns.<origin>, without addresses).
	NameServers []NameServer
	// Hostmaster is the SOA's RNAME (default hostmaster.<origin>).
	Hostmaster string
	TTL        TTLs
	// Refresh, Retry and Expire are the SOA timers, in seconds (defaults
	// 3600, 600, 86400). Nothing transfers the zone; they are there for
	// tools that read them.
	Refresh, Retry, Expire uint32
}

// DefaultConfig returns the defaults for the "hive." zone.
func DefaultConfig() Config {
	return Config{Origin: DefaultOrigin}
}

// ErrConfig is wrapped by errors about an unusable Config.
var ErrConfig = errors.New("zone: bad config")

// normalize returns c with defaults filled in and every name lower case and
// fully qualified.
func (c Config) normalize() (Config, error) {
	if c.Origin == "" {
		c.Origin = DefaultOrigin
	}
	origin, err := domain(c.Origin)
	if err != nil {
		return c, fmt.Errorf("%w: origin: %w", ErrConfig, err)
	}
	c.Origin = origin
	if len(c.NameServers) == 0 {
		c.NameServers = []NameServer{{Name: "ns." + origin}}
	}
	ns := make([]NameServer, len(c.NameServers))
	for i, n := range c.NameServers {
		name, err := domain(n.Name)
		if err != nil {
			return c, fmt.Errorf("%w: name server %d: %w", ErrConfig, i, err)
		}
		ns[i] = NameServer{Name: name, Addrs: n.Addrs}
	}
	c.NameServers = ns
	if c.Hostmaster == "" {
		c.Hostmaster = "hostmaster." + origin
	}
	if c.Hostmaster, err = domain(c.Hostmaster); err != nil {
		return c, fmt.Errorf("%w: hostmaster: %w", ErrConfig, err)
	}
	def := func(v *uint32, d uint32) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.TTL.Node, 10)
	def(&c.TTL.Service, 5)
	def(&c.TTL.Apex, 3600)
	def(&c.TTL.Negative, 5)
	def(&c.Refresh, 3600)
	def(&c.Retry, 600)
	def(&c.Expire, 86400)
	return c, nil
}

func domain(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty name")
	}
	s = dns.CanonicalName(s)
	if _, ok := dns.IsDomainName(s); !ok {
		return "", fmt.Errorf("%q is not a domain name", s)
	}
	return s, nil
}

// Label returns s as a DNS label for a node, service or tag name, and false
// when it cannot be one: letters, digits and hyphens, 1 to 63 of them, not
// starting or ending with a hyphen (RFC 1123). Names that are not are left
// out of the zone rather than escaped into something nobody would type.
func Label(s string) (string, bool) {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			return "", false
		}
	}
	return strings.ToLower(s), true
}
