// Package hoststate is the dns processor's view of the cluster's hosts and
// their services: what every processor (DNS, the hosts file, …) serves.
//
// Updates arrive on two paths (DESIGN.md §1): the durable one, a watch on the
// control plane's event log, and the fast one, a stream pushed by the host
// agents themselves. Each carries the host's own sequence number; the state
// keeps the highest one it has seen per host and drops anything not newer,
// so the order in which the two paths deliver does not matter and both
// converge on the same records.
//
// The State is pure: no goroutines, no clocks, no I/O. Readers get immutable
// Snapshots and never lock against a writer; a writer builds the next
// snapshot beside the current one and swaps it in.
package hoststate

import (
	"net/netip"
	"slices"

	"github.com/hivemind/hivemind/pkg/hlc"
)

// Health is a service instance's check state, as Consul names it.
// The zero value is Critical: a new instance is not served until a check
// has passed.
type Health uint8

// Health states, worst first.
const (
	Critical Health = iota
	Warning
	Passing
)

// Serving reports whether an instance in this state is answered for.
// Warning counts as serving, as in Consul: a degraded instance is still
// better than none.
func (h Health) Serving() bool { return h == Passing || h == Warning }

func (h Health) String() string {
	switch h {
	case Passing:
		return "passing"
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return "unknown"
}

// Service is one service instance on a host.
type Service struct {
	// ID tells apart two instances of one service on the same host; empty
	// means the service name.
	ID     string
	Name   string
	Port   uint16
	Tags   []string
	Weight uint16
	Health Health
}

// Host is everything one host agent publishes about its host, stamped with
// the host's sequence number and HLC time.
type Host struct {
	Name     string
	Addrs    []netip.Addr
	Tags     []string
	Meta     map[string]string
	Services []Service

	// Seq is the host's own sequence number for this record (persisted by
	// the agent, so it only grows).
	Seq uint64
	// Time is the host's HLC timestamp for this record.
	Time hlc.Timestamp
	// Failed is set while the control plane holds the host's member as
	// failed; its records are kept but not served.
	Failed bool
}

// clone returns a deep copy, so the state never shares memory with a caller
// that may go on changing what it handed in.
func (h *Host) clone() *Host {
	c := *h
	c.Addrs = slices.Clone(h.Addrs)
	c.Tags = slices.Clone(h.Tags)
	if h.Meta != nil {
		c.Meta = make(map[string]string, len(h.Meta))
		for k, v := range h.Meta {
			c.Meta[k] = v
		}
	}
	c.Services = make([]Service, len(h.Services))
	for i, s := range h.Services {
		s.Tags = slices.Clone(s.Tags)
		c.Services[i] = s
	}
	return &c
}
