package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at is the leader's HLC stamp d after t0.
func at(d time.Duration) uint64 { return uint64(hlc.FromTime(t0.Add(d))) }

func put(key, val string) *raftv1.Command {
	return &raftv1.Command{Proposer: "cp1", Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: key, Value: []byte(val)}}}
}

func del(key string, prefix bool) *raftv1.Command {
	return &raftv1.Command{Proposer: "cp1", Op: &raftv1.Command_Delete{Delete: &hivemindv1.DeleteRequest{Key: key, Prefix: prefix}}}
}

func claim(key, holder string, hlcAt uint64, lease time.Duration) *raftv1.Command {
	return &raftv1.Command{Hlc: hlcAt, Op: &raftv1.Command_ClaimIntent{ClaimIntent: &hivemindv1.ClaimIntentRequest{Key: key, Holder: holder, Lease: durationpb.New(lease)}}}
}

func mustApply(t *testing.T, m *Machine, cmd *raftv1.Command) (*raftv1.Result, []*hivemindv1.Event) {
	t.Helper()
	res, evs := m.Apply(cmd)
	if res.GetCode() != 0 {
		t.Fatalf("apply %v: rejected: %s", cmd, res.GetMessage())
	}
	return res, evs
}

func TestRevisionsAreGapFreeAndEventsMatchChanges(t *testing.T) {
	m := New(Config{})
	steps := []struct {
		cmd     *raftv1.Command
		rev     int64
		types   []string
		hooks   []hivemindv1.Hook
		comment string
	}{
		{put("/app/a", "1"), 1, []string{"kv.put"}, []hivemindv1.Hook{hivemindv1.Hook_HOOK_CREATE}, "create"},
		{put("/app/a", "2"), 2, []string{"kv.put"}, []hivemindv1.Hook{hivemindv1.Hook_HOOK_MODIFY}, "modify"},
		{put("/app/b", "1"), 3, []string{"kv.put"}, []hivemindv1.Hook{hivemindv1.Hook_HOOK_CREATE}, "another key"},
		{del("/app/zzz", false), 3, nil, nil, "deleting nothing changes nothing"},
		{del("/app/", true), 4, []string{"kv.delete", "kv.delete"}, []hivemindv1.Hook{hivemindv1.Hook_HOOK_DELETE, hivemindv1.Hook_HOOK_DELETE}, "prefix delete: one revision"},
		{&raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{Type: "host.updated", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/nodes/h1", Source: "h1"}}}, 5, []string{"host.updated"}, []hivemindv1.Hook{hivemindv1.Hook_HOOK_MODIFY}, "append"},
	}
	var lastID string
	for _, s := range steps {
		res, evs := mustApply(t, m, s.cmd)
		if res.Revision != s.rev || m.Revision() != s.rev {
			t.Fatalf("%s: revision %d (machine %d), want %d", s.comment, res.Revision, m.Revision(), s.rev)
		}
		if len(evs) != len(s.types) {
			t.Fatalf("%s: %d events, want %d", s.comment, len(evs), len(s.types))
		}
		for i, e := range evs {
			if e.Type != s.types[i] || e.Hook != s.hooks[i] || e.Revision != s.rev {
				t.Errorf("%s: event %d = %s/%s@%d", s.comment, i, e.Type, e.Hook, e.Revision)
			}
			if e.Id <= lastID {
				t.Errorf("%s: id %s does not follow %s", s.comment, e.Id, lastID)
			}
			lastID = e.Id
		}
	}
	all, err := m.EventsFrom(1, 100)
	if err != nil || len(all) != 6 {
		t.Fatalf("log has %d events (%v), want 6", len(all), err)
	}
}

func TestKeyValueRevisionsAndVersions(t *testing.T) {
	m := New(Config{})
	mustApply(t, m, put("/app/x", "a"))
	mustApply(t, m, put("/app/other", "b"))
	res, _ := mustApply(t, m, &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/app/x", Value: []byte("c"), PrevKv: true}}})
	kv := res.GetPut().GetKv()
	if kv.CreateRevision != 1 || kv.ModRevision != 3 || kv.Version != 2 || string(kv.Value) != "c" {
		t.Fatalf("kv = %v", kv)
	}
	if string(res.GetPut().GetPrevKv().GetValue()) != "a" {
		t.Fatalf("prev kv = %v", res.GetPut().GetPrevKv())
	}
	got, found, rev := m.Get("/app/x")
	if !found || !proto.Equal(got, kv) || rev != 3 {
		t.Fatalf("Get = %v %v %d", got, found, rev)
	}
}

func TestNodeKeysLastWriterWins(t *testing.T) {
	m := New(Config{})
	newer := &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/nodes/h1/addr", Value: []byte("new"), Hlc: 200}}}
	older := &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/nodes/h1/addr", Value: []byte("old"), Hlc: 100}}}
	mustApply(t, m, newer)
	res, evs := mustApply(t, m, older)
	if res.GetPut().GetApplied() || len(evs) != 0 || m.Revision() != 1 {
		t.Fatalf("late write applied: %v, %d events, rev %d", res.GetPut(), len(evs), m.Revision())
	}
	if kv, _, _ := m.Get("/nodes/h1/addr"); string(kv.Value) != "new" {
		t.Fatalf("value %q, want new", kv.Value)
	}
	oldDelete := &raftv1.Command{Op: &raftv1.Command_Delete{Delete: &hivemindv1.DeleteRequest{Key: "/nodes/h1/addr", Hlc: 150}}}
	if res, _ := mustApply(t, m, oldDelete); res.GetDelete().GetDeleted() != 0 {
		t.Fatal("a delete older than the value removed it")
	}
	// Outside /nodes/ the log order decides, whatever the stamps say.
	mustApply(t, m, &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/app/c", Value: []byte("new"), Hlc: 200}}})
	if res, _ := mustApply(t, m, &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/app/c", Value: []byte("old"), Hlc: 100}}}); !res.GetPut().GetApplied() {
		t.Fatal("LWW applied outside /nodes/")
	}
}

func txnCmd(txn *hivemindv1.TxnRequest) *raftv1.Command {
	return &raftv1.Command{Op: &raftv1.Command_Txn{Txn: txn}}
}

func tput(k, v string) *hivemindv1.TxnOp {
	return &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: k, Value: []byte(v)}}}
}

func tget(k string) *hivemindv1.TxnOp {
	return &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Get{Get: &hivemindv1.TxnGet{Key: k}}}
}

func TestTxnCompares(t *testing.T) {
	tests := []struct {
		name string
		cmp  *hivemindv1.Compare
		want bool
	}{
		{"value equal", &hivemindv1.Compare{Key: "/k", Target: hivemindv1.Compare_TARGET_VALUE, Result: hivemindv1.Compare_RESULT_EQUAL, Value: []byte("v1")}, true},
		{"value not equal", &hivemindv1.Compare{Key: "/k", Target: hivemindv1.Compare_TARGET_VALUE, Result: hivemindv1.Compare_RESULT_NOT_EQUAL, Value: []byte("v1")}, false},
		{"version greater", &hivemindv1.Compare{Key: "/k", Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_GREATER, Number: 0}, true},
		{"mod revision less", &hivemindv1.Compare{Key: "/k", Target: hivemindv1.Compare_TARGET_MOD_REVISION, Result: hivemindv1.Compare_RESULT_LESS, Number: 1}, false},
		{"create revision equal", &hivemindv1.Compare{Key: "/k", Target: hivemindv1.Compare_TARGET_CREATE_REVISION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: 1}, true},
		{"missing key has version 0", &hivemindv1.Compare{Key: "/missing", Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: 0}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Config{})
			mustApply(t, m, put("/k", "v1"))
			res, _ := mustApply(t, m, txnCmd(&hivemindv1.TxnRequest{Compares: []*hivemindv1.Compare{tt.cmp}, Success: []*hivemindv1.TxnOp{tput("/then", "x")}, Failure: []*hivemindv1.TxnOp{tput("/else", "x")}}))
			if res.GetTxn().GetSucceeded() != tt.want {
				t.Fatalf("succeeded = %v, want %v", res.GetTxn().GetSucceeded(), tt.want)
			}
			_, thenSet, _ := m.Get("/then")
			_, elseSet, _ := m.Get("/else")
			if thenSet != tt.want || elseSet == tt.want {
				t.Fatalf("branch effects: then=%v else=%v", thenSet, elseSet)
			}
		})
	}
}

func TestTxnIsAtomicAtOneRevision(t *testing.T) {
	m := New(Config{})
	mustApply(t, m, put("/a", "0"))
	res, evs := mustApply(t, m, txnCmd(&hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{tput("/a", "1"), tget("/a"), tput("/b", "2"), {Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: "/a"}}}}}))
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3", len(evs))
	}
	for _, e := range evs {
		if e.Revision != 2 {
			t.Fatalf("event at revision %d, want all at 2", e.Revision)
		}
	}
	if got := string(res.GetTxn().GetResults()[1].GetKv().GetValue()); got != "1" {
		t.Fatalf("get inside txn saw %q, want the txn's own write", got)
	}
	// A txn with a bad third op applies nothing.
	bad := txnCmd(&hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{tput("/c", "1"), tput("/d", "1"), tput("no-slash", "1")}})
	res, evs = m.Apply(bad)
	if codes.Code(res.GetCode()) != codes.InvalidArgument || !strings.Contains(res.GetMessage(), "success[2].put.key") || len(evs) != 0 {
		t.Fatalf("bad txn: %v, %d events", res, len(evs))
	}
	if _, found, _ := m.Get("/c"); found || m.Revision() != 2 {
		t.Fatal("bad txn was partly applied")
	}
	// A txn that writes nothing does not take a revision.
	mustApply(t, m, txnCmd(&hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{tget("/b")}}))
	if m.Revision() != 2 {
		t.Fatalf("read-only txn moved the revision to %d", m.Revision())
	}
}

func TestIntents(t *testing.T) {
	m := New(Config{})
	lease := 10 * time.Second
	steps := []struct {
		name    string
		cmd     *raftv1.Command
		granted bool
		holder  string
		code    codes.Code
	}{
		{"first claim wins", claim("/deliver/s/e1", "n1", at(0), lease), true, "n1", codes.OK},
		{"second claimer loses", claim("/deliver/s/e1", "n2", at(time.Second), lease), false, "n1", codes.OK},
		{"holder renews", claim("/deliver/s/e1", "n1", at(5*time.Second), lease), true, "n1", codes.OK},
		{"not expired yet (renewed)", claim("/deliver/s/e1", "n2", at(12*time.Second), lease), false, "n1", codes.OK},
		{"expired: taken over", claim("/deliver/s/e1", "n2", at(16*time.Second), lease), true, "n2", codes.OK},
		{"old holder cannot complete", &raftv1.Command{Hlc: at(17 * time.Second), Op: &raftv1.Command_CompleteIntent{CompleteIntent: &hivemindv1.CompleteIntentRequest{Key: "/deliver/s/e1", Holder: "n1", Outcome: "200"}}}, false, "", codes.FailedPrecondition},
		{"new holder completes", &raftv1.Command{Hlc: at(18 * time.Second), Op: &raftv1.Command_CompleteIntent{CompleteIntent: &hivemindv1.CompleteIntentRequest{Key: "/deliver/s/e1", Holder: "n2", Outcome: "200"}}}, false, "n2", codes.OK},
		{"completed is never granted again", claim("/deliver/s/e1", "n3", at(time.Hour), lease), false, "n2", codes.OK},
	}
	for _, s := range steps {
		res, _ := m.Apply(s.cmd)
		if codes.Code(res.GetCode()) != s.code {
			t.Fatalf("%s: code %v (%s), want %v", s.name, codes.Code(res.GetCode()), res.GetMessage(), s.code)
		}
		if s.code != codes.OK {
			continue
		}
		if c := res.GetClaimIntent(); c != nil {
			if c.Granted != s.granted || c.Intent.Holder != s.holder {
				t.Fatalf("%s: granted=%v holder=%s", s.name, c.Granted, c.Intent.Holder)
			}
		}
	}
	in, _ := m.Intent("/deliver/s/e1")
	if in.State != hivemindv1.Intent_STATE_COMPLETED || in.Outcome != "200" || in.Claims != 2 {
		t.Fatalf("intent = %v", in)
	}
}

func TestReleaseAndLeaderChangeExtendsLeases(t *testing.T) {
	m := New(Config{})
	mustApply(t, m, claim("/i/a", "n1", at(0), 10*time.Second))
	mustApply(t, m, claim("/i/b", "n1", at(0), 10*time.Second))
	rel := &raftv1.Command{Hlc: at(time.Second), Op: &raftv1.Command_ReleaseIntent{ReleaseIntent: &hivemindv1.ReleaseIntentRequest{Key: "/i/b", Holder: "n1"}}}
	mustApply(t, m, rel)
	if res, _ := mustApply(t, m, claim("/i/b", "n2", at(2*time.Second), 10*time.Second)); !res.GetClaimIntent().Granted {
		t.Fatal("released intent not granted to the next claimer")
	}
	// A new leader at t=8s: /i/a now lasts until at least 18s.
	mustApply(t, m, &raftv1.Command{Hlc: at(8 * time.Second), Op: &raftv1.Command_LeaderChange{LeaderChange: &raftv1.LeaderChange{Leader: "cp2"}}})
	if res, _ := mustApply(t, m, claim("/i/a", "n2", at(15*time.Second), 10*time.Second)); res.GetClaimIntent().Granted {
		t.Fatal("lease ran out early after a leader change")
	}
	if res, _ := mustApply(t, m, claim("/i/a", "n2", at(19*time.Second), 10*time.Second)); !res.GetClaimIntent().Granted {
		t.Fatal("lease never ran out")
	}
}

func TestIdempotentReplay(t *testing.T) {
	m := New(TestConfig())
	cmd := put("/app/x", "1")
	cmd.IdempotencyKey = "k1"
	first, _ := mustApply(t, m, cmd)
	again, evs := mustApply(t, m, proto.Clone(cmd).(*raftv1.Command))
	if !proto.Equal(first, again) || len(evs) != 0 || m.Revision() != 1 {
		t.Fatalf("replay applied again: %v events, revision %d", len(evs), m.Revision())
	}
	// The window is bounded: after 8 more keys, k1 is forgotten.
	for i := 0; i < 8; i++ {
		c := put(fmt.Sprintf("/app/y%d", i), "1")
		c.IdempotencyKey = fmt.Sprintf("other-%d", i)
		mustApply(t, m, c)
	}
	if _, evs := mustApply(t, m, cmd); len(evs) != 1 {
		t.Fatal("key outside the window was still remembered")
	}
}

func TestCompactionAndRetention(t *testing.T) {
	m := New(TestConfig()) // keeps 50 revisions
	for i := 0; i < 60; i++ {
		mustApply(t, m, put(fmt.Sprintf("/app/k%d", i), "v"))
	}
	if m.OldestRevision() != 11 || m.Epoch() != 1 {
		t.Fatalf("oldest %d epoch %d, want 11 and 1 (retention does not change the epoch)", m.OldestRevision(), m.Epoch())
	}
	_, err := m.EventsFrom(5, 10)
	if !errors.Is(err, ErrCompacted) || !strings.Contains(err.Error(), "oldest retained is 11") {
		t.Fatalf("got %v", err)
	}
	res, _ := m.Apply(&raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: 100}}})
	if codes.Code(res.GetCode()) != codes.OutOfRange || !strings.Contains(res.GetMessage(), "revision") {
		t.Fatalf("compact to the future: %v", res)
	}
	res, _ = mustApply(t, m, &raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: 40}}})
	if res.GetCompact().GetEpoch() != 2 || m.OldestRevision() != 40 {
		t.Fatalf("compact: %v oldest %d", res.GetCompact(), m.OldestRevision())
	}
	if evs, _ := m.EventsFrom(40, 1); len(evs) != 1 || evs[0].Revision != 40 {
		t.Fatalf("revision 40 not retained: %v", evs)
	}
	res, _ = mustApply(t, m, &raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: 20}}})
	if res.GetCompact().GetEpoch() != 2 {
		t.Fatal("compacting to an older revision changed the epoch")
	}
}

func script() []*raftv1.Command {
	var cmds []*raftv1.Command
	for i := 0; i < 30; i++ {
		c := put(fmt.Sprintf("/app/k%d", i%7), fmt.Sprint(i))
		c.Hlc = at(time.Duration(i) * time.Second)
		c.IdempotencyKey = fmt.Sprint("id", i)
		cmds = append(cmds, c)
		if i%5 == 0 {
			cmds = append(cmds, claim(fmt.Sprintf("/i/%d", i), "n1", at(time.Duration(i)*time.Second), 5*time.Second))
		}
		if i%9 == 0 {
			cmds = append(cmds, del("/app/k1", false))
		}
	}
	return cmds
}

func TestDeterministicAndSnapshotRestore(t *testing.T) {
	a, b := New(TestConfig()), New(TestConfig())
	cmds := script()
	half := len(cmds) / 2
	for _, c := range cmds[:half] {
		a.Apply(proto.Clone(c).(*raftv1.Command))
		b.Apply(proto.Clone(c).(*raftv1.Command))
	}
	snap, err := proto.Marshal(a.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var restoredSnap raftv1.Snapshot
	if err := proto.Unmarshal(snap, &restoredSnap); err != nil {
		t.Fatal(err)
	}
	c := New(TestConfig())
	if err := c.Restore(&restoredSnap); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds[half:] {
		ra, _ := a.Apply(proto.Clone(cmd).(*raftv1.Command))
		rb, _ := b.Apply(proto.Clone(cmd).(*raftv1.Command))
		rc, _ := c.Apply(proto.Clone(cmd).(*raftv1.Command))
		if !proto.Equal(ra, rb) || !proto.Equal(ra, rc) {
			t.Fatalf("results differ:\n%v\n%v\n%v", ra, rb, rc)
		}
	}
	// Replaying an idempotency key remembered before the snapshot.
	rc, evs := c.Apply(proto.Clone(cmds[len(cmds)-1]).(*raftv1.Command))
	if len(evs) != 0 || rc.GetCode() != 0 {
		t.Fatal("restored machine forgot an idempotency key")
	}
	if !proto.Equal(a.Snapshot(), b.Snapshot()) || !proto.Equal(a.Snapshot(), c.Snapshot()) {
		t.Fatal("same commands gave different states")
	}
}

func TestRange(t *testing.T) {
	m := New(Config{})
	for _, k := range []string{"/srv/web/h1", "/srv/web/h2", "/srv/web/h3", "/srv/db/h1", "/srv/webx"} {
		mustApply(t, m, put(k, "v"))
	}
	kvs, more, _ := m.Range("/srv/web/", "", 2, false)
	if len(kvs) != 2 || !more || kvs[0].Key != "/srv/web/h1" {
		t.Fatalf("page 1: %v more=%v", kvs, more)
	}
	kvs, more, _ = m.Range("/srv/web/", kvs[1].Key, 2, true)
	if len(kvs) != 1 || more || kvs[0].Key != "/srv/web/h3" || kvs[0].Value != nil {
		t.Fatalf("page 2: %v more=%v", kvs, more)
	}
}
