// Package registry is the stored form of the cluster's member registry:
// where members live in the control plane's tree, how a member record is
// encoded in a key's value and in a member event's payload, and the event
// types. The control plane's state machine writes it; every role reads it
// (ListMembers, WatchMembers) through the ordinary Range and Watch calls.
package registry

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Prefix holds the registry: one key per admitted node.
const Prefix = "/members/"

// Member event types.
const (
	EventJoined  = "member.joined"
	EventAlive   = "member.alive"
	EventSuspect = "member.suspect"
	EventFailed  = "member.failed"
	EventLeft    = "member.left"
)

// EventTypes lists every member event type.
var EventTypes = []string{EventJoined, EventAlive, EventSuspect, EventFailed, EventLeft}

// Key is the registry key of a node.
func Key(name string) string { return Prefix + name }

// NameOf returns the node a registry key names, or "" for another key.
func NameOf(key string) string {
	name, ok := strings.CutPrefix(key, Prefix)
	if !ok || strings.Contains(name, "/") {
		return ""
	}
	return name
}

// record is the JSON form: a fixed field order, so every replica encodes a
// member to the same bytes, and receivers (webhooks, filters) can read it.
type record struct {
	Name           string   `json:"name"`
	Performs       []string `json:"performs,omitempty"`
	Requires       []string `json:"requires,omitempty"`
	NeedsBootstrap []string `json:"needs_bootstrap,omitempty"`
	GRPCAddress    string   `json:"grpc_address,omitempty"`
	GossipAddress  string   `json:"gossip_address,omitempty"`
	State          string   `json:"state"`
	Incarnation    uint64   `json:"incarnation"`
	JoinRevision   int64    `json:"join_revision"`
	StateRevision  int64    `json:"state_revision"`
	StateChangedAt int64    `json:"state_changed_at_unix_nano"`
	PublicKey      []byte   `json:"public_key,omitempty"`
}

var stateNames = map[hivemindv1.MemberState]string{
	hivemindv1.MemberState_MEMBER_STATE_ALIVE:   "alive",
	hivemindv1.MemberState_MEMBER_STATE_SUSPECT: "suspect",
	hivemindv1.MemberState_MEMBER_STATE_FAILED:  "failed",
	hivemindv1.MemberState_MEMBER_STATE_LEFT:    "left",
}

var stateEvents = map[hivemindv1.MemberState]string{
	hivemindv1.MemberState_MEMBER_STATE_ALIVE:   EventAlive,
	hivemindv1.MemberState_MEMBER_STATE_SUSPECT: EventSuspect,
	hivemindv1.MemberState_MEMBER_STATE_FAILED:  EventFailed,
	hivemindv1.MemberState_MEMBER_STATE_LEFT:    EventLeft,
}

// StateName is the lowercase name of a state ("alive", …), "" if unknown.
func StateName(s hivemindv1.MemberState) string { return stateNames[s] }

// EventFor is the event type a change into state s records.
func EventFor(s hivemindv1.MemberState) string { return stateEvents[s] }

// Encode returns the stored form of m.
func Encode(m *hivemindv1.ClusterMember) []byte {
	b, err := json.Marshal(record{
		Name:           m.GetName(),
		Performs:       m.GetRoles().GetPerforms(),
		Requires:       m.GetRoles().GetRequires(),
		NeedsBootstrap: m.GetRoles().GetNeedsBootstrap(),
		GRPCAddress:    m.GetGrpcAddress(),
		GossipAddress:  m.GetGossipAddress(),
		State:          stateNames[m.GetState()],
		Incarnation:    m.GetIncarnation(),
		JoinRevision:   m.GetJoinRevision(),
		StateRevision:  m.GetStateRevision(),
		StateChangedAt: m.GetStateChangedAt().AsTime().UnixNano(),
		PublicKey:      m.GetPublicKey(),
	})
	if err != nil {
		panic(fmt.Sprintf("registry: encode member: %v", err)) // plain strings and numbers
	}
	return b
}

// Decode reads a stored member (a registry value or a member event's
// payload).
func Decode(b []byte) (*hivemindv1.ClusterMember, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("member record: %w", err)
	}
	m := &hivemindv1.ClusterMember{
		Name:           r.Name,
		Roles:          &hivemindv1.Roles{Performs: r.Performs, Requires: r.Requires, NeedsBootstrap: r.NeedsBootstrap},
		GrpcAddress:    r.GRPCAddress,
		GossipAddress:  r.GossipAddress,
		Incarnation:    r.Incarnation,
		JoinRevision:   r.JoinRevision,
		StateRevision:  r.StateRevision,
		StateChangedAt: timestamppb.New(time.Unix(0, r.StateChangedAt)),
		PublicKey:      r.PublicKey,
	}
	for s, n := range stateNames {
		if n == r.State {
			m.State = s
		}
	}
	if m.State == hivemindv1.MemberState_MEMBER_STATE_UNSPECIFIED {
		return nil, fmt.Errorf("member record %q: unknown state %q", r.Name, r.State)
	}
	return m, nil
}

// Performs reports whether m performs role.
func Performs(m *hivemindv1.ClusterMember, role string) bool {
	for _, r := range m.GetRoles().GetPerforms() {
		if r == role {
			return true
		}
	}
	return false
}
