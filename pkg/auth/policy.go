package auth

import (
	"fmt"
	"maps"
	"sync"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Requirement is what a method asks of its caller.
type Requirement int

const (
	// Public methods need no token (the handshake itself, health).
	Public Requirement = iota + 1
	// NeedRead, NeedWrite and NeedAdmin need the scope of that name;
	// nodes have read and write.
	NeedRead
	NeedWrite
	NeedAdmin
	// NodeOnly methods are for cluster nodes alone (raft traffic), whatever
	// scopes an operator has.
	NodeOnly
)

func (r Requirement) String() string {
	switch r {
	case Public:
		return "public"
	case NeedRead:
		return "read"
	case NeedWrite:
		return "write"
	case NeedAdmin:
		return "admin"
	case NodeOnly:
		return "node-only"
	}
	return fmt.Sprintf("requirement(%d)", int(r))
}

// scope is the scope a requirement names, if any.
func (r Requirement) scope() Scope {
	switch r {
	case NeedRead:
		return ScopeRead
	case NeedWrite:
		return ScopeWrite
	case NeedAdmin:
		return ScopeAdmin
	}
	return ""
}

// Policy maps full gRPC method names ("/pkg.Service/Method") to their
// requirement. A method without a rule is denied. Safe for concurrent use;
// roles add rules for their services with Set before serving.
type Policy struct {
	mu    sync.RWMutex
	rules map[string]Requirement
}

// DefaultRules covers every hivemind service: those every node serves
// (Auth, health, reflection, Node, Membership), the control plane's
// (ControlPlane, Raft) and the other roles' (Host, DNSProcessor, Notifier).
func DefaultRules() map[string]Requirement {
	return map[string]Requirement{
		hivemindv1.Auth_Challenge_FullMethodName:    Public,
		hivemindv1.Auth_Authenticate_FullMethodName: Public,
		"/grpc.health.v1.Health/Check":              Public,
		"/grpc.health.v1.Health/List":               Public,
		"/grpc.health.v1.Health/Watch":              Public,

		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      NeedRead,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": NeedRead,

		hivemindv1.Node_Info_FullMethodName:         NeedRead,
		hivemindv1.Node_Ping_FullMethodName:         NeedRead,
		hivemindv1.Node_PingRequest_FullMethodName:  NeedRead,
		hivemindv1.Node_EstimateRTT_FullMethodName:  NeedRead,
		hivemindv1.Node_Probe_FullMethodName:        NeedRead,
		hivemindv1.Node_ProbeRequest_FullMethodName: NeedRead,

		hivemindv1.ControlPlane_Status_FullMethodName:         NeedRead,
		hivemindv1.ControlPlane_Watch_FullMethodName:          NeedRead,
		hivemindv1.ControlPlane_Get_FullMethodName:            NeedRead,
		hivemindv1.ControlPlane_Range_FullMethodName:          NeedRead,
		hivemindv1.ControlPlane_MemberList_FullMethodName:     NeedRead,
		hivemindv1.ControlPlane_AppendEvent_FullMethodName:    NeedWrite,
		hivemindv1.ControlPlane_AppendEvents_FullMethodName:   NeedWrite,
		hivemindv1.ControlPlane_Put_FullMethodName:            NeedWrite,
		hivemindv1.ControlPlane_Delete_FullMethodName:         NeedWrite,
		hivemindv1.ControlPlane_Txn_FullMethodName:            NeedWrite,
		hivemindv1.ControlPlane_ClaimIntent_FullMethodName:    NeedWrite,
		hivemindv1.ControlPlane_CompleteIntent_FullMethodName: NeedWrite,
		hivemindv1.ControlPlane_ReleaseIntent_FullMethodName:  NeedWrite,
		// Compaction drops history every watcher may still need, and
		// membership changes can cost the quorum: operators decide those.
		hivemindv1.ControlPlane_Compact_FullMethodName:      NeedAdmin,
		hivemindv1.ControlPlane_MemberAdd_FullMethodName:    NeedAdmin,
		hivemindv1.ControlPlane_MemberRemove_FullMethodName: NeedAdmin,
		// A snapshot holds every key, secrets included.
		hivemindv1.ControlPlane_Snapshot_FullMethodName: NeedAdmin,

		// A node joins as itself; the role checks the name against the
		// caller's identity.
		hivemindv1.Membership_Join_FullMethodName:         NodeOnly,
		hivemindv1.Membership_Leave_FullMethodName:        NeedWrite,
		hivemindv1.Membership_ListMembers_FullMethodName:  NeedRead,
		hivemindv1.Membership_WatchMembers_FullMethodName: NeedRead,

		// A node gets a certificate for itself: name and key come from its
		// credential and the registry (package nodecert).
		hivemindv1.Certificates_IssueNodeCertificate_FullMethodName: NodeOnly,

		raftv1.Raft_Send_FullMethodName:    NodeOnly,
		raftv1.Raft_Forward_FullMethodName: NodeOnly,

		// The roles' own services. A role may tighten these with Set.
		hivemindv1.Host_GetHost_FullMethodName:      NeedRead,
		hivemindv1.Host_ListServices_FullMethodName: NeedRead,
		hivemindv1.Host_Discover_FullMethodName:     NeedRead,
		hivemindv1.Host_WatchService_FullMethodName: NeedRead,
		hivemindv1.Host_UpdateTTL_FullMethodName:    NeedWrite,
		hivemindv1.Host_Announce_FullMethodName:     NeedWrite,
		hivemindv1.Host_Withdraw_FullMethodName:     NeedWrite,
		// Reload re-reads the host's own config file (docs/host.md).
		hivemindv1.Host_Reload_FullMethodName: NeedWrite,

		hivemindv1.DNSProcessor_Status_FullMethodName:       NeedRead,
		hivemindv1.DNSProcessor_Lookup_FullMethodName:       NeedRead,
		hivemindv1.DNSProcessor_HostSnapshot_FullMethodName: NeedRead,
		// Hosts push their own records; an operator changes records through
		// the control plane.
		hivemindv1.DNSProcessor_PushHosts_FullMethodName: NodeOnly,

		hivemindv1.Notifier_GetSubscription_FullMethodName:   NeedRead,
		hivemindv1.Notifier_ListSubscriptions_FullMethodName: NeedRead,
		hivemindv1.Notifier_ListDeliveries_FullMethodName:    NeedRead,
		// A subscription with a filter also needs ScopeFilter, which the
		// handler checks with Require: it depends on the request.
		hivemindv1.Notifier_CreateSubscription_FullMethodName: NeedWrite,
		hivemindv1.Notifier_DeleteSubscription_FullMethodName: NeedWrite,
		hivemindv1.Notifier_TestSubscription_FullMethodName:   NeedWrite,
	}
}

// NewPolicy returns a policy with DefaultRules.
func NewPolicy() *Policy {
	return &Policy{rules: DefaultRules()}
}

// Set gives fullMethod its requirement, replacing any earlier rule.
func (p *Policy) Set(fullMethod string, r Requirement) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules[fullMethod] = r
}

// Lookup returns the rule for fullMethod.
func (p *Policy) Lookup(fullMethod string) (Requirement, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	r, ok := p.rules[fullMethod]
	return r, ok
}

// Rules returns a copy of every rule.
func (p *Policy) Rules() map[string]Requirement {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return maps.Clone(p.rules)
}
