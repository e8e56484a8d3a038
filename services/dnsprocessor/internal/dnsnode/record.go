package dnsnode

import (
	"fmt"
	"math"
	"net/netip"
	"strings"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// hostKeySuffix ends the key a host publishes its record at:
// /nodes/<node>/host (the contract with the host agent).
const hostKeySuffix = "/host"

// hostKey is where node's record lives on the control plane.
func hostKey(node string) string { return auth.NodesPrefix + node + hostKeySuffix }

// nodeOfHostKey returns the node whose record key is key, "" for any other
// key (a host's checks, configuration, …).
func nodeOfHostKey(key string) string {
	rest, ok := strings.CutPrefix(key, auth.NodesPrefix)
	if !ok {
		return ""
	}
	node, ok := strings.CutSuffix(rest, hostKeySuffix)
	if !ok || node == "" || strings.Contains(node, "/") {
		return ""
	}
	return node
}

// fieldError names the field of a HostRecord that is wrong, so the API
// edge can answer INVALID_ARGUMENT with it.
type fieldError struct {
	Field, Reason string
}

func (e *fieldError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) error {
	return &fieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Limits on a record, so one host cannot make every dns processor build a
// huge zone. Far above what a real host publishes.
const (
	maxAddresses = 64
	maxServices  = 256
	maxTags      = 64
	maxMeta      = 64
	maxTextBytes = 512
)

// update turns a host's record into the update it means: a Put, or a
// Delete carrying the record's seq when the host is gone. node, when not
// empty, is the owner named by the record's key and wins over rec.node
// (the control plane checked the key's ownership, not the value).
func update(rec *hivemindv1.HostRecord, node string, revision uint64) (hoststate.Update, error) {
	if node == "" {
		node = rec.GetNode()
	}
	if err := auth.ValidateNodeName(node); err != nil {
		return hoststate.Update{}, invalid("node", "%v", err)
	}
	if rec.GetSeq() == 0 {
		return hoststate.Update{}, invalid("seq", "must be > 0: the host's sequence number starts at 1")
	}
	u := hoststate.Update{Host: node, Seq: rec.GetSeq(), Time: hlc.Timestamp(rec.GetHlc()), Revision: revision}
	if rec.GetGone() {
		u.Op = hoststate.Delete
		return u, nil
	}
	h, err := hostOf(rec)
	if err != nil {
		return hoststate.Update{}, err
	}
	h.Name = node
	u.Op, u.Record = hoststate.Put, h
	return u, nil
}

// hostOf converts and checks the served part of a record.
func hostOf(rec *hivemindv1.HostRecord) (*hoststate.Host, error) {
	if n := len(rec.GetAddresses()); n > maxAddresses {
		return nil, invalid("addresses", "%d addresses, at most %d", n, maxAddresses)
	}
	h := &hoststate.Host{Name: rec.GetNode(), Seq: rec.GetSeq(), Time: hlc.Timestamp(rec.GetHlc())}
	for i, a := range rec.GetAddresses() {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, invalid(fmt.Sprintf("addresses[%d]", i), "%q is not an IP address", a)
		}
		h.Addrs = append(h.Addrs, ip.Unmap())
	}
	var err error
	if h.Tags, err = texts("tags", rec.GetTags()); err != nil {
		return nil, err
	}
	if n := len(rec.GetMeta()); n > maxMeta {
		return nil, invalid("meta", "%d keys, at most %d", n, maxMeta)
	}
	if len(rec.GetMeta()) > 0 {
		h.Meta = make(map[string]string, len(rec.GetMeta()))
		for k, v := range rec.GetMeta() {
			if k == "" || len(k)+len(v) > maxTextBytes {
				return nil, invalid(fmt.Sprintf("meta[%q]", k), "key must be 1 byte or more and key plus value at most %d bytes", maxTextBytes)
			}
			h.Meta[k] = v
		}
	}
	if n := len(rec.GetServices()); n > maxServices {
		return nil, invalid("services", "%d services, at most %d", n, maxServices)
	}
	for i, s := range rec.GetServices() {
		svc, err := serviceOf(fmt.Sprintf("services[%d]", i), s)
		if err != nil {
			return nil, err
		}
		h.Services = append(h.Services, svc)
	}
	return h, nil
}

func serviceOf(field string, s *hivemindv1.ServiceInstance) (hoststate.Service, error) {
	if s.GetName() == "" || len(s.GetName()) > maxTextBytes {
		return hoststate.Service{}, invalid(field+".name", "must be 1..%d bytes", maxTextBytes)
	}
	if s.GetPort() > math.MaxUint16 {
		return hoststate.Service{}, invalid(field+".port", "%d is not a port", s.GetPort())
	}
	if s.GetWeight() > math.MaxUint16 {
		return hoststate.Service{}, invalid(field+".weight", "%d is above %d", s.GetWeight(), math.MaxUint16)
	}
	tags, err := texts(field+".tags", s.GetTags())
	if err != nil {
		return hoststate.Service{}, err
	}
	var health hoststate.Health
	switch s.GetStatus() {
	case hivemindv1.HealthStatus_HEALTH_STATUS_PASSING:
		health = hoststate.Passing
	case hivemindv1.HealthStatus_HEALTH_STATUS_WARNING:
		health = hoststate.Warning
	case hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL, hivemindv1.HealthStatus_HEALTH_STATUS_UNSPECIFIED:
		// A service nobody has checked yet is not served.
		health = hoststate.Critical
	default:
		return hoststate.Service{}, invalid(field+".status", "unknown status %d", s.GetStatus())
	}
	return hoststate.Service{
		ID: s.GetId(), Name: s.GetName(), Port: uint16(s.GetPort()), Tags: tags,
		Weight: uint16(s.GetWeight()), Health: health,
	}, nil
}

func texts(field string, in []string) ([]string, error) {
	if len(in) > maxTags {
		return nil, invalid(field, "%d entries, at most %d", len(in), maxTags)
	}
	for i, t := range in {
		if t == "" || len(t) > maxTextBytes {
			return nil, invalid(fmt.Sprintf("%s[%d]", field, i), "must be 1..%d bytes", maxTextBytes)
		}
	}
	return in, nil
}

// recordOf is the record of a held host, as a peer dns processor reads it
// (HostSnapshot) and restores it with update.
func recordOf(h *hoststate.Host) *hivemindv1.HostRecord {
	rec := &hivemindv1.HostRecord{Node: h.Name, Tags: h.Tags, Meta: h.Meta, Seq: h.Seq, Hlc: uint64(h.Time)}
	for _, a := range h.Addrs {
		rec.Addresses = append(rec.Addresses, a.String())
	}
	for _, s := range h.Services {
		st := hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL
		switch s.Health {
		case hoststate.Passing:
			st = hivemindv1.HealthStatus_HEALTH_STATUS_PASSING
		case hoststate.Warning:
			st = hivemindv1.HealthStatus_HEALTH_STATUS_WARNING
		}
		rec.Services = append(rec.Services, &hivemindv1.ServiceInstance{
			Name: s.Name, Id: s.ID, Port: uint32(s.Port), Tags: s.Tags, Weight: uint32(s.Weight), Status: st,
		})
	}
	return rec
}
