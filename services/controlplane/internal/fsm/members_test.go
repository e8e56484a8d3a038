package fsm

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

const (
	alive   = hivemindv1.MemberState_MEMBER_STATE_ALIVE
	suspect = hivemindv1.MemberState_MEMBER_STATE_SUSPECT
	failed  = hivemindv1.MemberState_MEMBER_STATE_FAILED
	left    = hivemindv1.MemberState_MEMBER_STATE_LEFT
)

// Two node keys: a name is bound to the key of its first join.
var (
	keyA = []byte(strings.Repeat("A", 32))
	keyB = []byte(strings.Repeat("B", 32))
)

func join(name string, inc uint64) *raftv1.Command { return joinWithKey(name, inc, keyA) }

func joinWithKey(name string, inc uint64, key []byte) *raftv1.Command {
	return &raftv1.Command{Proposer: "cp1", Op: &raftv1.Command_MemberJoin{MemberJoin: &hivemindv1.JoinRequest{
		Name: name, Roles: &hivemindv1.Roles{Performs: []string{"host"}, Requires: []string{"dns"}}, GrpcAddress: "10.0.0.1:7100", GossipAddress: "10.0.0.1:7946", Incarnation: inc,
		PublicKey: key,
	}}}
}

func setState(name string, st hivemindv1.MemberState, inc uint64) *raftv1.Command {
	return &raftv1.Command{Proposer: "cp1", Op: &raftv1.Command_MemberSetState{MemberSetState: &raftv1.MemberSetState{Name: name, State: st, Incarnation: inc}}}
}

func leave(name string) *raftv1.Command {
	return &raftv1.Command{Proposer: "cp1", Op: &raftv1.Command_MemberLeave{MemberLeave: &hivemindv1.LeaveRequest{Name: name}}}
}

// TestMemberRegistry walks one node through its life; each step says which
// event (if any) it produces and the state the registry holds after it.
func TestMemberRegistry(t *testing.T) {
	m := New(Config{})
	steps := []struct {
		comment string
		cmd     *raftv1.Command
		code    codes.Code
		event   string // "" when nothing changes
		state   hivemindv1.MemberState
		inc     uint64
	}{
		{"first join", join("web-1", 1), codes.OK, registry.EventJoined, alive, 1},
		{"gossip says alive: already so", setState("web-1", alive, 1), codes.OK, "", alive, 1},
		{"suspect", setState("web-1", suspect, 1), codes.OK, registry.EventSuspect, suspect, 1},
		{"failed", setState("web-1", failed, 1), codes.OK, registry.EventFailed, failed, 1},
		{"failed again: idempotent", setState("web-1", failed, 1), codes.OK, "", failed, 1},
		{"restart: join with a newer generation", join("web-1", 2), codes.OK, registry.EventJoined, alive, 2},
		{"a report about the previous life is ignored", setState("web-1", failed, 1), codes.OK, "", alive, 2},
		{"a late join from the previous life is refused", join("web-1", 1), codes.FailedPrecondition, "", alive, 2},
		{"the name with another key is refused, whatever the incarnation", joinWithKey("web-1", 999, keyB), codes.PermissionDenied, "", alive, 2},
		{"leave", leave("web-1"), codes.OK, registry.EventLeft, left, 2},
		{"leave again: idempotent", leave("web-1"), codes.OK, "", left, 2},
		{"left is final: gossip cannot fail it", setState("web-1", failed, 2), codes.OK, "", left, 2},
		{"left is final: gossip cannot revive it", setState("web-1", alive, 3), codes.OK, "", left, 2},
		{"rejoin after leaving, with a new key: leaving released the name", joinWithKey("web-1", 3, keyB), codes.OK, registry.EventJoined, alive, 3},
		{"now bound to the new key: the old one is refused", join("web-1", 4), codes.PermissionDenied, "", alive, 3},
		{"unknown member", setState("nobody", failed, 1), codes.NotFound, "", alive, 3},
		{"leave of an unknown member", leave("nobody"), codes.NotFound, "", alive, 3},
	}
	for _, s := range steps {
		before := m.Revision()
		res, evs := m.Apply(s.cmd)
		if codes.Code(res.GetCode()) != s.code {
			t.Fatalf("%s: code %v (%s), want %v", s.comment, codes.Code(res.GetCode()), res.GetMessage(), s.code)
		}
		switch {
		case s.event == "" && len(evs) != 0:
			t.Fatalf("%s: events %v, want none", s.comment, evs)
		case s.event == "" && m.Revision() != before:
			t.Fatalf("%s: revision moved %d → %d without a change", s.comment, before, m.Revision())
		case s.event != "" && (len(evs) != 1 || evs[0].GetType() != s.event || evs[0].GetUri() != "/members/web-1"):
			t.Fatalf("%s: events %v, want one %s on /members/web-1", s.comment, evs, s.event)
		}
		if s.event != "" {
			got, err := registry.Decode(evs[0].GetPayload())
			if err != nil || got.GetState() != s.state {
				t.Fatalf("%s: event payload %v (%v), want state %v", s.comment, got, err, s.state)
			}
		}
		mem, ok := m.member("web-1")
		if !ok || mem.GetState() != s.state || mem.GetIncarnation() != s.inc {
			t.Fatalf("%s: registry holds %v, want state %v incarnation %d", s.comment, mem, s.state, s.inc)
		}
	}
	members, _ := m.Members()
	if len(members) != 1 || members[0].GetRoles().GetRequires()[0] != "dns" || members[0].GetGossipAddress() != "10.0.0.1:7946" {
		t.Fatalf("Members() = %v", members)
	}
}

func TestMemberRegistryIsReservedForMemberCommands(t *testing.T) {
	m := New(Config{})
	mustApply(t, m, join("web-1", 1))
	mustApply(t, m, put("/misc", "x"))
	for _, c := range []struct {
		cmd   *raftv1.Command
		field string
	}{
		{put("/members/web-1", "forged"), "key"},
		{del("/members/web-1", false), "key"},
		{del("/members/", true), "key"},
		{&raftv1.Command{Op: &raftv1.Command_Txn{Txn: &hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/members/x"}}}}}}}, "success[0].put.key"},
	} {
		res, _ := m.Apply(c.cmd)
		if codes.Code(res.GetCode()) != codes.InvalidArgument || !strings.Contains(res.GetMessage(), "invalid "+c.field+":") {
			t.Errorf("%v: got %v %q, want INVALID_ARGUMENT naming %s", c.cmd, codes.Code(res.GetCode()), res.GetMessage(), c.field)
		}
	}
	// A prefix that happens to cover the registry leaves it alone.
	res, _ := mustApply(t, m, del("/m", true))
	if res.GetDelete().GetDeleted() != 1 {
		t.Fatalf("prefix delete /m removed %d keys, want only /misc", res.GetDelete().GetDeleted())
	}
	if _, ok := m.member("web-1"); !ok {
		t.Fatal("registry entry deleted by a prefix delete")
	}
}

func TestMemberCommandValidation(t *testing.T) {
	long := make([]byte, MaxNodeNameBytes+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, c := range []struct {
		req   *hivemindv1.JoinRequest
		field string
	}{
		{&hivemindv1.JoinRequest{Name: "", Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "a:1"}, "name"},
		{&hivemindv1.JoinRequest{Name: string(long), Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "a:1"}, "name"},
		{&hivemindv1.JoinRequest{Name: "a.b", Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "a:1"}, "name"},
		{&hivemindv1.JoinRequest{Name: "-a", Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "a:1"}, "name"},
		{&hivemindv1.JoinRequest{Name: "a", GrpcAddress: "a:1"}, "roles.performs"},
		{&hivemindv1.JoinRequest{Name: "a", Roles: &hivemindv1.Roles{Performs: []string{"Host"}}, GrpcAddress: "a:1"}, "roles.performs[0]"},
		{&hivemindv1.JoinRequest{Name: "a", Roles: &hivemindv1.Roles{Performs: []string{"host"}, Requires: []string{""}}, GrpcAddress: "a:1"}, "roles.requires[0]"},
		{&hivemindv1.JoinRequest{Name: "a", Roles: &hivemindv1.Roles{Performs: []string{"host"}}}, "grpc_address"},
		{&hivemindv1.JoinRequest{Name: "a", Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "nope"}, "grpc_address"},
		{&hivemindv1.JoinRequest{Name: "a", Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "a:1", GossipAddress: "x"}, "gossip_address"},
	} {
		err := ValidateJoin(c.req)
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != c.field || fe.Code != codes.InvalidArgument {
			t.Errorf("ValidateJoin(%v) = %v, want INVALID_ARGUMENT on %s", c.req, err, c.field)
		}
	}
	if err := validateSetState(&raftv1.MemberSetState{Name: "a"}); err == nil {
		t.Error("a state change without a state was accepted")
	}
}

func TestMembersSurviveSnapshot(t *testing.T) {
	m := New(Config{})
	mustApply(t, m, join("web-1", 4))
	mustApply(t, m, setState("web-1", failed, 4))
	r := New(Config{})
	if err := r.Restore(m.Snapshot()); err != nil {
		t.Fatal(err)
	}
	mem, ok := r.member("web-1")
	if !ok || mem.GetState() != failed || mem.GetIncarnation() != 4 {
		t.Fatalf("after restore: %v", mem)
	}
}
