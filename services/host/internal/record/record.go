// Package record builds the host's HostRecord — what it publishes at
// /nodes/<node>/host and pushes to dns processors — from its configuration,
// its addresses and the health of its services. Building is pure apart from
// the time a check's state last changed, which the Builder remembers; the
// sequence number and the HLC timestamp are stamped by the publisher.
package record

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/host/internal/check"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

// Builder builds records and remembers when each check's state last
// changed (CheckState.updated_at). It is not safe for concurrent use.
type Builder struct {
	// Node is the record's node: the agent's cluster identity.
	Node string
	// Now reads the time (nil: time.Now).
	Now func() time.Time

	since map[checkKey]seen
}

type checkKey struct{ service, check string }

type seen struct {
	status check.Status
	output string
	at     time.Time
}

// Build is the record of cfg's node with addrs and the services' health
// (by service id). A service the health does not cover yet is critical: a
// new service is critical until a check passes.
func (b *Builder) Build(cfg *hostconfig.Config, addrs []netip.Addr, health []check.ServiceHealth) *hivemindv1.HostRecord {
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	t := now()
	byID := make(map[string]check.ServiceHealth, len(health))
	for _, h := range health {
		byID[h.ServiceID] = h
	}
	next := map[checkKey]seen{}
	r := &hivemindv1.HostRecord{
		Node: b.Node,
		Tags: slices.Clone(cfg.Tags),
		Meta: maps.Clone(cfg.Meta),
	}
	for _, a := range addrs {
		r.Addresses = append(r.Addresses, a.String())
	}
	for _, s := range cfg.Services {
		si := &hivemindv1.ServiceInstance{
			Name: s.Name, Id: s.ID, Port: uint32(s.Port), Tags: slices.Clone(s.Tags),
			Weight: uint32(s.Weight), Meta: maps.Clone(s.Meta),
			Status: hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL,
		}
		if h, ok := byID[s.ID]; ok {
			si.Status = Status(h.Status)
			for _, c := range h.Checks {
				k := checkKey{s.ID, c.ID}
				st, ok := b.since[k]
				if !ok || st.status != c.Status || st.output != c.Output {
					st = seen{c.Status, c.Output, t}
				}
				next[k] = st
				si.Checks = append(si.Checks, &hivemindv1.CheckState{
					Name: c.Name, Kind: string(c.Kind), Status: Status(c.Status), Output: c.Output,
					UpdatedAt: timestamppb.New(st.at),
				})
			}
		}
		r.Services = append(r.Services, si)
	}
	b.since = next
	return r
}

// Status is s in the API's terms.
func Status(s check.Status) hivemindv1.HealthStatus {
	switch s {
	case check.Passing:
		return hivemindv1.HealthStatus_HEALTH_STATUS_PASSING
	case check.Warning:
		return hivemindv1.HealthStatus_HEALTH_STATUS_WARNING
	case check.Critical:
		return hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL
	}
	return hivemindv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED
}

// FromStatus is the check package's status of s (0 when unspecified).
func FromStatus(s hivemindv1.HealthStatus) check.Status {
	switch s {
	case hivemindv1.HealthStatus_HEALTH_STATUS_PASSING:
		return check.Passing
	case hivemindv1.HealthStatus_HEALTH_STATUS_WARNING:
		return check.Warning
	case hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL:
		return check.Critical
	}
	return 0
}
