package dnsnode

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/dnsserver"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/zone"
)

// Flags are the dns processor's own command-line flags (HIVEMIND_* in the
// environment, like every flag).
type Flags struct {
	DNSAddr     string
	Zone        string
	NameServers string
	Hostmaster  string
	TTLNode     uint
	TTLService  uint
	TTLApex     uint
	TTLNegative uint
	UDPSize     uint
	HostsFile   string
}

// Register adds the flags to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.DNSAddr, "dns-addr", "127.0.0.1:8053", "address DNS is served on, UDP and TCP (containers use :53)")
	fs.StringVar(&f.Zone, "zone", zone.DefaultOrigin, "the zone answered for; everything outside it is REFUSED")
	fs.StringVar(&f.NameServers, "name-servers", "", "NS records at the apex, comma-separated, the first is the SOA MNAME; name=address adds glue for a name inside the zone (repeat the name for more addresses) (default ns.<zone>)")
	fs.StringVar(&f.Hostmaster, "hostmaster", "", "SOA RNAME (default hostmaster.<zone>)")
	fs.UintVar(&f.TTLNode, "ttl-node", 10, "TTL in seconds of <node>.node.<zone> A, AAAA and TXT records")
	fs.UintVar(&f.TTLService, "ttl-service", 5, "TTL in seconds of service records (A, AAAA, SRV), which change with health checks")
	fs.UintVar(&f.TTLApex, "ttl-apex", 3600, "TTL in seconds of the SOA and NS records at the apex")
	fs.UintVar(&f.TTLNegative, "ttl-negative", 5, "how long NXDOMAIN and NODATA may be cached: the SOA's TTL and MINIMUM in negative answers")
	fs.UintVar(&f.UDPSize, "edns-udp-size", dnsserver.DefaultUDPSize, "EDNS0 UDP payload size advertised, and the largest UDP answer (512..65535)")
	fs.StringVar(&f.HostsFile, "hosts-file", "", "also keep this file in /etc/hosts format, replaced atomically on every change (off when empty)")
}

// DNSConfig checks the flags and returns the handler's configuration.
func (f *Flags) DNSConfig() (dnsserver.Config, error) {
	var c dnsserver.Config
	for name, v := range map[string]uint{"--ttl-node": f.TTLNode, "--ttl-service": f.TTLService, "--ttl-apex": f.TTLApex, "--ttl-negative": f.TTLNegative} {
		if v == 0 || v > 1<<31-1 {
			return c, fmt.Errorf("%s: %d is not 1..%d seconds", name, v, 1<<31-1)
		}
	}
	if f.UDPSize < 512 || f.UDPSize > 65535 {
		return c, fmt.Errorf("--edns-udp-size: %d is not 512..65535", f.UDPSize)
	}
	ns, err := parseNameServers(f.NameServers)
	if err != nil {
		return c, fmt.Errorf("--name-servers: %w", err)
	}
	c = dnsserver.Config{
		Zone: zone.Config{
			Origin: f.Zone, NameServers: ns, Hostmaster: f.Hostmaster,
			TTL: zone.TTLs{Node: uint32(f.TTLNode), Service: uint32(f.TTLService), Apex: uint32(f.TTLApex), Negative: uint32(f.TTLNegative)},
		},
		UDPSize: uint16(f.UDPSize),
	}
	// Checks the zone's names once, here, so a typo fails at start.
	if _, err := dnsserver.NewHandler(c); err != nil {
		return c, err
	}
	return c, nil
}

// parseNameServers reads "ns1.hive.=10.0.0.1,ns1.hive.=::1,ns.example.org.":
// names in order of first appearance, addresses gathered per name.
func parseNameServers(s string) ([]zone.NameServer, error) {
	var out []zone.NameServer
	index := map[string]int{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, addr, hasAddr := strings.Cut(item, "=")
		key := strings.ToLower(strings.TrimSuffix(name, ".")) + "."
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, zone.NameServer{Name: name})
		}
		if hasAddr {
			a, err := netip.ParseAddr(addr)
			if err != nil {
				return nil, fmt.Errorf("%q: %q is not an IP address", item, addr)
			}
			out[i].Addrs = append(out[i].Addrs, a)
		}
	}
	return out, nil
}
