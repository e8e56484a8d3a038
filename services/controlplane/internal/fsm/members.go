package fsm

import (
	"bytes"
	"fmt"
	"net"
	"strings"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

// Limits of the member registry.
const (
	MaxNodeNameBytes = 63
	MaxRoles         = 16
	MaxRoleBytes     = 32
	MaxAddressBytes  = 256
)

// reserved says whether key belongs to the member registry (package
// registry), which only member commands write: joins, leaves and the
// leader's gossip reconciliation, never Put, Delete or Txn.
func reserved(key string) bool { return strings.HasPrefix(key, registry.Prefix) }

// member reads a registry entry.
func (m *Machine) member(name string) (*hivemindv1.ClusterMember, bool) {
	kv, ok := m.kvs.Get(&hivemindv1.KeyValue{Key: registry.Key(name)})
	if !ok {
		return nil, false
	}
	mem, err := registry.Decode(kv.GetValue())
	if err != nil {
		// Only member commands write here, so this is a bug, not input.
		panic(fmt.Sprintf("fsm: corrupt member record %s: %v", kv.Key, err))
	}
	return mem, true
}

// putMember stores mem and emits its event.
func (m *Machine) putMember(c *change, mem *hivemindv1.ClusterMember, eventType string) {
	value := registry.Encode(mem)
	key := registry.Key(mem.GetName())
	prev, _ := m.kvs.Get(&hivemindv1.KeyValue{Key: key})
	kv := &hivemindv1.KeyValue{Key: key, Value: value, CreateRevision: c.rev, ModRevision: c.rev, Version: 1, Hlc: uint64(c.ts)}
	hook := hivemindv1.Hook_HOOK_CREATE
	if prev != nil {
		kv.CreateRevision = prev.CreateRevision
		kv.Version = prev.Version + 1
		hook = hivemindv1.Hook_HOOK_MODIFY
	}
	m.kvs.ReplaceOrInsert(kv)
	c.emit(&hivemindv1.Event{Type: eventType, Hook: hook, Uri: key, Source: mem.GetName(), Payload: value, Kv: kv})
}

func (m *Machine) applyMemberJoin(c *change, req *hivemindv1.JoinRequest) (*hivemindv1.ClusterMember, error) {
	prev, ok := m.member(req.GetName())
	if ok && prev.GetState() != hivemindv1.MemberState_MEMBER_STATE_LEFT && len(prev.GetPublicKey()) > 0 && !bytes.Equal(prev.GetPublicKey(), req.GetPublicKey()) {
		// The name is bound to the key of its first approved join until
		// the member leaves (on its own or removed by an operator).
		return nil, &FieldError{Field: "public_key", Code: codes.PermissionDenied,
			Reason: fmt.Sprintf("%s is bound to another key: a name is taken over only after its member has left or an operator removed it", req.GetName())}
	}
	if ok && req.GetIncarnation() < prev.GetIncarnation() {
		return nil, &FieldError{Field: "incarnation", Code: codes.FailedPrecondition,
			Reason: fmt.Sprintf("%d is older than the registered %d: a join from a previous life of %s", req.GetIncarnation(), prev.GetIncarnation(), req.GetName())}
	}
	mem := &hivemindv1.ClusterMember{
		Name:           req.GetName(),
		Roles:          req.GetRoles(),
		GrpcAddress:    req.GetGrpcAddress(),
		GossipAddress:  req.GetGossipAddress(),
		State:          hivemindv1.MemberState_MEMBER_STATE_ALIVE,
		Incarnation:    req.GetIncarnation(),
		JoinRevision:   c.rev,
		StateRevision:  c.rev,
		StateChangedAt: timestamp(c.ts.Physical()),
		PublicKey:      req.GetPublicKey(),
	}
	m.putMember(c, mem, registry.EventJoined)
	return mem, nil
}

func (m *Machine) applyMemberSetState(c *change, req *raftv1.MemberSetState) (*hivemindv1.ClusterMember, error) {
	mem, ok := m.member(req.GetName())
	if !ok {
		return nil, &FieldError{Field: "name", Code: codes.NotFound, Reason: fmt.Sprintf("%q is not a member", req.GetName())}
	}
	switch {
	case req.GetIncarnation() < mem.GetIncarnation():
		// A report about a previous life of the node.
		return mem, nil
	case mem.GetState() == hivemindv1.MemberState_MEMBER_STATE_LEFT:
		// Left is final until the node joins again.
		return mem, nil
	case req.GetState() == mem.GetState() && req.GetIncarnation() == mem.GetIncarnation():
		return mem, nil
	}
	next := &hivemindv1.ClusterMember{
		Name:           mem.GetName(),
		Roles:          mem.GetRoles(),
		GrpcAddress:    mem.GetGrpcAddress(),
		GossipAddress:  mem.GetGossipAddress(),
		State:          req.GetState(),
		Incarnation:    req.GetIncarnation(),
		JoinRevision:   mem.GetJoinRevision(),
		StateRevision:  mem.GetStateRevision(),
		StateChangedAt: mem.GetStateChangedAt(),
		PublicKey:      mem.GetPublicKey(),
	}
	if req.GetState() != mem.GetState() {
		next.StateRevision = c.rev
		next.StateChangedAt = timestamp(c.ts.Physical())
	}
	m.putMember(c, next, registry.EventFor(req.GetState()))
	return next, nil
}

func (m *Machine) applyMemberLeave(c *change, req *hivemindv1.LeaveRequest) (*hivemindv1.ClusterMember, error) {
	mem, ok := m.member(req.GetName())
	if !ok {
		return nil, &FieldError{Field: "name", Code: codes.NotFound, Reason: fmt.Sprintf("%q is not a member", req.GetName())}
	}
	if mem.GetState() == hivemindv1.MemberState_MEMBER_STATE_LEFT {
		return mem, nil
	}
	return m.applyMemberSetState(c, &raftv1.MemberSetState{Name: mem.GetName(), State: hivemindv1.MemberState_MEMBER_STATE_LEFT, Incarnation: mem.GetIncarnation()})
}

// Member returns the registry entry of name.
func (m *Machine) Member(name string) (*hivemindv1.ClusterMember, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.member(name)
}

// Members lists the registry in name order, with the revision it reflects.
func (m *Machine) Members() ([]*hivemindv1.ClusterMember, int64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*hivemindv1.ClusterMember
	m.kvs.AscendGreaterOrEqual(&hivemindv1.KeyValue{Key: registry.Prefix}, func(kv *hivemindv1.KeyValue) bool {
		if !strings.HasPrefix(kv.Key, registry.Prefix) {
			return false
		}
		if mem, err := registry.Decode(kv.GetValue()); err == nil {
			out = append(out, mem)
		}
		return true
	})
	return out, m.rev
}

// ValidateNodeName checks a node name: it becomes a DNS label
// (<node>.node.<zone>), so 1..63 letters, digits, '-' and '_', not
// starting or ending with '-'.
func ValidateNodeName(field, name string) error {
	if name == "" || len(name) > MaxNodeNameBytes {
		return invalid(field, "must be 1..%d bytes", MaxNodeNameBytes)
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return invalid(field, "%q has %q at byte %d; use letters, digits, '-' and '_'", name, ch, i)
		}
	}
	if name[0] == '-' || name[len(name)-1] == '-' {
		return invalid(field, "%q must not start or end with '-'", name)
	}
	return nil
}

func validateRoles(field string, roles []string) error {
	if len(roles) > MaxRoles {
		return invalid(field, "%d roles, at most %d", len(roles), MaxRoles)
	}
	for i, r := range roles {
		if r == "" || len(r) > MaxRoleBytes {
			return invalid(fmt.Sprintf("%s[%d]", field, i), "must be 1..%d bytes", MaxRoleBytes)
		}
		for j := 0; j < len(r); j++ {
			if ch := r[j]; !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
				return invalid(fmt.Sprintf("%s[%d]", field, i), "%q: use lowercase letters, digits and '-'", r)
			}
		}
	}
	return nil
}

func validateAddress(field, addr string, required bool) error {
	if addr == "" {
		if required {
			return invalid(field, "must not be empty")
		}
		return nil
	}
	if len(addr) > MaxAddressBytes {
		return invalid(field, "%d bytes, at most %d", len(addr), MaxAddressBytes)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return invalid(field, "%q is not host:port", addr)
	}
	return nil
}

// ValidateJoin checks a join request.
func ValidateJoin(req *hivemindv1.JoinRequest) error {
	if err := ValidateNodeName("name", req.GetName()); err != nil {
		return err
	}
	if len(req.GetRoles().GetPerforms()) == 0 {
		return invalid("roles.performs", "a node performs at least one role")
	}
	for _, f := range []struct {
		name  string
		roles []string
	}{{"roles.performs", req.GetRoles().GetPerforms()}, {"roles.requires", req.GetRoles().GetRequires()}, {"roles.needs_bootstrap", req.GetRoles().GetNeedsBootstrap()}} {
		if err := validateRoles(f.name, f.roles); err != nil {
			return err
		}
	}
	if err := validateAddress("grpc_address", req.GetGrpcAddress(), true); err != nil {
		return err
	}
	return validateAddress("gossip_address", req.GetGossipAddress(), false)
}

func validateSetState(req *raftv1.MemberSetState) error {
	if err := ValidateNodeName("name", req.GetName()); err != nil {
		return err
	}
	if registry.StateName(req.GetState()) == "" {
		return invalid("state", "must be one of ALIVE, SUSPECT, FAILED, LEFT")
	}
	return nil
}
