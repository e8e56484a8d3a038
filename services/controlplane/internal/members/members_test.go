package members

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/pkg/ticket"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
)

// machineStore applies commands straight to a state machine: the registry
// logic without raft.
type machineStore struct {
	mu     sync.Mutex
	m      *fsm.Machine
	events []*hivemindv1.Event
}

func newStore() *machineStore { return &machineStore{m: fsm.New(fsm.Config{})} }

func (s *machineStore) Propose(_ context.Context, cmd *raftv1.Command) (*raftv1.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd.Hlc = uint64(hlc.FromTime(time.Now())) // as the leader stamps it
	res, evs := s.m.Apply(cmd)
	s.events = append(s.events, evs...)
	return res, nil
}
func (s *machineStore) ReadIndex(context.Context) error { return nil }
func (s *machineStore) Machine() *fsm.Machine           { return s.m }
func (s *machineStore) Name() string                    { return "cp1" }

func (s *machineStore) types() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		out = append(out, e.GetType()+" "+e.GetUri())
	}
	s.events = nil
	return out
}

// cpKey is member cp1's node key; it signs the tickets cp1 issues.
var cpKey = auth.NewNodeKey()

// newLocal is the registry of member cp1, which has joined it with its key
// (it issues tickets only then).
func newLocal(t *testing.T, st *machineStore) *Local {
	t.Helper()
	l := &Local{Store: st, Key: cpKey}
	req := &hivemindv1.JoinRequest{Name: "cp1", Roles: &hivemindv1.Roles{Performs: []string{"controlplane"}}, GrpcAddress: "127.0.0.1:7000", Incarnation: 1}
	cpKey.SignJoin(req)
	if _, err := l.Join(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	st.types()
	return l
}

func joinReq(name string, gen uint64) *hivemindv1.JoinRequest {
	return &hivemindv1.JoinRequest{Name: name, Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "127.0.0.1:7100", Incarnation: gen}
}

func TestJoinCommitsAndIssuesATicket(t *testing.T) {
	st := newStore()
	ctx := context.Background()
	// Before cp1 has joined with its key, the join commits but cp1 signs no
	// ticket nobody could check.
	if _, err := (&Local{Store: st, Key: cpKey}).Join(ctx, joinReq("early", 1)); status.Code(err) != codes.Unavailable {
		t.Fatalf("ticket before the issuer joined: %v, want UNAVAILABLE", err)
	}
	l := newLocal(t, st)
	resp, err := l.Join(ctx, joinReq("web-1", 3))
	if err != nil {
		t.Fatal(err)
	}
	b := &Bindings{Machine: st.Machine()}
	tk, err := ticket.Verify(resp.GetTicket(), b.IssuerKey, "web-1", resp.GetDigest().GetEpoch())
	if err != nil {
		t.Fatalf("ticket: %v", err)
	}
	if tk.Incarnation != 3 || tk.Revision != 3 || tk.Issuer != "cp1" {
		t.Fatalf("ticket %+v, want incarnation 3 at revision 3 by cp1", tk)
	}
	// Only a control-plane member's key issues: web-1's own key does not.
	if _, ok := b.IssuerKey("web-1"); ok {
		t.Fatal("a host is a ticket issuer")
	}
	var web *hivemindv1.ClusterMember
	for _, m := range resp.GetDigest().GetMembers() {
		if m.GetName() == "web-1" {
			web = m
		}
	}
	if web.GetState() != hivemindv1.MemberState_MEMBER_STATE_ALIVE || len(resp.GetDigest().GetMembers()) != 3 {
		t.Fatalf("digest %v", resp.GetDigest())
	}
	if _, err := l.Join(ctx, &hivemindv1.JoinRequest{Name: "bad.name", GrpcAddress: "a:1"}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "name") {
		t.Fatalf("bad name: %v, want INVALID_ARGUMENT naming the field", err)
	}
	if _, err := l.Leave(ctx, &hivemindv1.LeaveRequest{Name: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("leave of a stranger: %v, want NOT_FOUND", err)
	}
	if _, err := l.Leave(ctx, &hivemindv1.LeaveRequest{Name: "web-1"}); err != nil {
		t.Fatal(err)
	}
	d, err := l.List(ctx, false)
	if err != nil || len(d.GetMembers()) != 3 || d.GetMembers()[2].GetName() != "web-1" || d.GetMembers()[2].GetState() != hivemindv1.MemberState_MEMBER_STATE_LEFT {
		t.Fatalf("after leave: %v %v", d, err)
	}
	if got := st.types(); strings.Join(got, ",") != "member.joined /members/web-1,member.left /members/web-1" {
		t.Fatalf("events %v", got)
	}
}

type observer map[string]Observation

func (o observer) Observe() map[string]Observation { return o }

func TestReconcilerIsTheOneDoorAndIdempotent(t *testing.T) {
	st := newStore()
	l := newLocal(t, st)
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "d"} {
		if _, err := l.Join(ctx, joinReq(n, 2)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Leave(ctx, &hivemindv1.LeaveRequest{Name: "d"}); err != nil {
		t.Fatal(err)
	}
	st.types()

	alive, suspect, dead := hivemindv1.MemberState_MEMBER_STATE_ALIVE, hivemindv1.MemberState_MEMBER_STATE_SUSPECT, hivemindv1.MemberState_MEMBER_STATE_FAILED
	obs := observer{"cp1": {alive, 1}, "a": {alive, 2}, "b": {dead, 2}, "d": {dead, 2}}
	r := NewReconciler(ReconcilerConfig{Store: st, IsLeader: func() bool { return true }, Gossip: obs, Grace: time.Hour})
	steps := []struct {
		comment string
		change  func()
		want    []string
	}{
		{"b dead; c unseen but within its grace; d left stays left", nil, []string{registry.EventFailed + " /members/b"}},
		{"a second pass changes nothing", nil, nil},
		{"b comes back", func() { obs["b"] = Observation{alive, 2} }, []string{registry.EventAlive + " /members/b"}},
		{"a suspected", func() { obs["a"] = Observation{suspect, 2} }, []string{registry.EventSuspect + " /members/a"}},
		{"gossip about a previous life of a is ignored", func() { obs["a"] = Observation{dead, 1} }, nil},
		{"c's grace runs out", func() { r.cfg.Grace = time.Nanosecond }, []string{registry.EventFailed + " /members/a", registry.EventFailed + " /members/c"}},
	}
	for _, s := range steps {
		if s.change != nil {
			s.change()
		}
		r.Pass(ctx)
		if got := st.types(); strings.Join(got, ",") != strings.Join(s.want, ",") {
			t.Fatalf("%s: events %v, want %v", s.comment, got, s.want)
		}
	}
}

func TestReconcilerProposesOnlyOnTheLeader(t *testing.T) {
	st := newStore()
	l := newLocal(t, st)
	if _, err := l.Join(context.Background(), joinReq("a", 1)); err != nil {
		t.Fatal(err)
	}
	st.types()
	r := NewReconciler(ReconcilerConfig{Store: st, IsLeader: func() bool { return false }, Gossip: observer{"a": {hivemindv1.MemberState_MEMBER_STATE_FAILED, 1}}, Interval: time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r.Run(ctx)
	if got := st.types(); len(got) != 0 {
		t.Fatalf("a follower proposed %v", got)
	}
}
