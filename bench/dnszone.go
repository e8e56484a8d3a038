package main

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/miekg/dns"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// qpsZone is the zone of dns.qps: hosts h0000…, each with one IPv4
// address, a TXT metadata key and one passing instance of one of
// services svc000… (instancesPer instances each, the first tagged
// "primary"). Both servers answer it: the dns processor from HostRecords on
// the control plane, NSD from the zone file zoneFile writes.
type qpsZone struct {
	hosts    int
	services int
}

const (
	qpsOrigin    = "hive."
	instancesPer = 4
	servicePort  = 8080
	// The dns processor's default TTLs (--ttl-node, --ttl-service,
	// --ttl-apex, --ttl-negative), which the zone file mirrors.
	ttlNode, ttlService, ttlApex, ttlNegative = 10, 5, 3600, 5
)

func newQPSZone(hosts int) qpsZone {
	return qpsZone{hosts: hosts, services: max(1, hosts/instancesPer)}
}

func hostName(i int) string    { return fmt.Sprintf("h%04d", i) }
func serviceName(s int) string { return fmt.Sprintf("svc%03d", s) }

func hostAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
}

// serviceOf is the service host i runs; primary says whether its instance
// carries the "primary" tag (one per service).
func (z qpsZone) serviceOf(i int) (s int, primary bool) {
	return i % z.services, i < z.services
}

// record is host i's HostRecord as its agent would publish it.
func (z qpsZone) record(i int, hlc uint64) *hivemindv1.HostRecord {
	s, primary := z.serviceOf(i)
	var tags []string
	if primary {
		tags = []string{"primary"}
	}
	return &hivemindv1.HostRecord{
		Node:      hostName(i),
		Addresses: []string{hostAddr(i).String()},
		Meta:      map[string]string{"rack": fmt.Sprintf("r%02d", i%20)},
		Services: []*hivemindv1.ServiceInstance{{
			Name: serviceName(s), Port: servicePort, Tags: tags,
			Status: hivemindv1.HealthStatus_HEALTH_STATUS_PASSING,
		}},
		Seq: 1, Hlc: hlc,
	}
}

// zoneFile renders the zone as the dns processor serves it with its
// default flags: the same owner names, TTLs, SOA (serial included) and NS.
func (z qpsZone) zoneFile(serial uint32) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s\n", qpsOrigin)
	fmt.Fprintf(&b, "@ %d IN SOA ns.%s hostmaster.%s %d 3600 600 86400 %d\n", ttlApex, qpsOrigin, qpsOrigin, serial, ttlNegative)
	fmt.Fprintf(&b, "@ %d IN NS ns.%s\n", ttlApex, qpsOrigin)
	for i := range z.hosts {
		r := z.record(i, 0)
		node := hostName(i) + ".node"
		fmt.Fprintf(&b, "%s %d IN A %s\n", node, ttlNode, hostAddr(i))
		fmt.Fprintf(&b, "%s %d IN TXT \"rack=%s\"\n", node, ttlNode, r.Meta["rack"])
		s, primary := z.serviceOf(i)
		svc := serviceName(s) + ".service"
		owners := []string{svc}
		if primary {
			owners = append(owners, "primary."+svc)
		}
		target := hostName(i) + ".node." + qpsOrigin
		for _, o := range owners {
			fmt.Fprintf(&b, "%s %d IN A %s\n", o, ttlService, hostAddr(i))
			fmt.Fprintf(&b, "%s %d IN SRV 1 1 %d %s\n", o, ttlService, servicePort, target)
		}
		fmt.Fprintf(&b, "_%s._tcp.service %d IN SRV 1 1 %d %s\n", serviceName(s), ttlService, servicePort, target)
	}
	return b.String()
}

// qpsQuery is one line of the dnsperf input, with what it must get.
type qpsQuery struct {
	name    string
	qtype   uint16
	rcode   int
	answers int
}

func (q qpsQuery) line() string { return q.name + " " + dns.TypeToString[q.qtype] }

// queryMix names the kinds of query in queries, with their share, for
// the result's note.
const queryMix = "50% node A, 12.5% service A, 12.5% SRV (4 targets, their A in additional), 5% tag A, 5% TXT, " +
	"7.5% NODATA (node AAAA, SRV owner A), 7.5% NXDOMAIN"

// queries is the dnsperf input, the same for both servers: every host's
// A, every service's A and SRV, and tagged, TXT, NODATA and NXDOMAIN
// questions, in a fixed shuffled order (queryMix gives the shares for
// 1,000 hosts).
func (z qpsZone) queries() []qpsQuery {
	var qs []qpsQuery
	add := func(name string, t uint16, rcode, answers int) {
		qs = append(qs, qpsQuery{name: name, qtype: t, rcode: rcode, answers: answers})
	}
	node := func(i int) string { return hostName(i%z.hosts) + ".node." + qpsOrigin }
	svc := func(s int) string { return serviceName(s%z.services) + ".service." + qpsOrigin }
	per := func(s int) int { return len(z.instances(s % z.services)) }
	for i := range z.hosts {
		add(node(i), dns.TypeA, dns.RcodeSuccess, 1)
	}
	for s := range z.services {
		add(svc(s), dns.TypeA, dns.RcodeSuccess, per(s))
		add("_"+serviceName(s)+"._tcp.service."+qpsOrigin, dns.TypeSRV, dns.RcodeSuccess, per(s))
	}
	tenth := max(1, z.hosts/10)
	for k := range tenth {
		add("primary."+svc(k), dns.TypeA, dns.RcodeSuccess, 1)
		add(node(k*7), dns.TypeTXT, dns.RcodeSuccess, 1)
		add(node(k*3), dns.TypeAAAA, dns.RcodeSuccess, 0)
	}
	for k := range tenth / 2 {
		add("_"+serviceName(k%z.services)+"._tcp.service."+qpsOrigin, dns.TypeA, dns.RcodeSuccess, 0)
	}
	for k := range tenth + tenth/2 {
		add(fmt.Sprintf("x%04d.node.%s", k, qpsOrigin), dns.TypeA, dns.RcodeNameError, 0)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	rng.Shuffle(len(qs), func(i, j int) { qs[i], qs[j] = qs[j], qs[i] })
	return qs
}

// instances lists the hosts running service s.
func (z qpsZone) instances(s int) []int {
	var out []int
	for i := s; i < z.hosts; i += z.services {
		out = append(out, i)
	}
	return out
}
