package fsm

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
)

func complete(key, holder string, hlcAt uint64) *raftv1.Command {
	return &raftv1.Command{Hlc: hlcAt, Op: &raftv1.Command_CompleteIntent{CompleteIntent: &hivemindv1.CompleteIntentRequest{Key: key, Holder: holder, Outcome: "sent"}}}
}

func release(key, holder string, hlcAt uint64) *raftv1.Command {
	return &raftv1.Command{Hlc: hlcAt, Op: &raftv1.Command_ReleaseIntent{ReleaseIntent: &hivemindv1.ReleaseIntentRequest{Key: key, Holder: holder}}}
}

func leaderChange(hlcAt uint64) *raftv1.Command {
	return &raftv1.Command{Hlc: hlcAt, Op: &raftv1.Command_LeaderChange{LeaderChange: &raftv1.LeaderChange{Leader: "cp2"}}}
}

// TestIntentRules runs each scenario on a fresh machine: setup commands
// must succeed, then the last command's outcome is checked.
func TestIntentRules(t *testing.T) {
	const k = "/deliver/s/e"
	lease := 10 * time.Second
	tests := []struct {
		name    string
		setup   []*raftv1.Command
		cmd     *raftv1.Command
		code    codes.Code
		msg     string // part of the rejection message
		granted bool
		holder  string
		state   hivemindv1.Intent_State
		event   string // type of the single event expected, "" for none
	}{
		{"claim a new intent", nil, claim(k, "n1", at(0), lease), codes.OK, "", true, "n1", hivemindv1.Intent_STATE_CLAIMED, "intent.claimed"},
		{"claim held by another", []*raftv1.Command{claim(k, "n1", at(0), lease)}, claim(k, "n2", at(10*time.Second), lease), codes.OK, "", false, "n1", hivemindv1.Intent_STATE_CLAIMED, ""},
		{"claim just after expiry", []*raftv1.Command{claim(k, "n1", at(0), lease)}, claim(k, "n2", at(10*time.Second+time.Millisecond), lease), codes.OK, "", true, "n2", hivemindv1.Intent_STATE_CLAIMED, "intent.claimed"},
		{"renew an expired lease", []*raftv1.Command{claim(k, "n1", at(0), lease)}, claim(k, "n1", at(time.Minute), lease), codes.OK, "", true, "n1", hivemindv1.Intent_STATE_CLAIMED, "intent.renewed"},
		{"claim after release", []*raftv1.Command{claim(k, "n1", at(0), lease), release(k, "n1", at(time.Second))}, claim(k, "n2", at(2*time.Second), lease), codes.OK, "", true, "n2", hivemindv1.Intent_STATE_CLAIMED, "intent.claimed"},
		{"claim after complete", []*raftv1.Command{claim(k, "n1", at(0), lease), complete(k, "n1", at(time.Second))}, claim(k, "n1", at(2*time.Second), lease), codes.OK, "", false, "n1", hivemindv1.Intent_STATE_COMPLETED, ""},
		{"complete on expired lease, not taken over", []*raftv1.Command{claim(k, "n1", at(0), lease)}, complete(k, "n1", at(time.Hour)), codes.OK, "", false, "n1", hivemindv1.Intent_STATE_COMPLETED, "intent.completed"},
		{"release by holder", []*raftv1.Command{claim(k, "n1", at(0), lease)}, release(k, "n1", at(time.Second)), codes.OK, "", false, "n1", hivemindv1.Intent_STATE_RELEASED, "intent.released"},
		{"complete a missing intent", nil, complete(k, "n1", at(0)), codes.FailedPrecondition, "does not exist", false, "", 0, ""},
		{"release by another", []*raftv1.Command{claim(k, "n1", at(0), lease)}, release(k, "n2", at(time.Second)), codes.FailedPrecondition, `held by "n1", not "n2"`, false, "", 0, ""},
		{"complete twice", []*raftv1.Command{claim(k, "n1", at(0), lease), complete(k, "n1", at(time.Second))}, complete(k, "n1", at(2*time.Second)), codes.FailedPrecondition, "STATE_COMPLETED, not claimed", false, "", 0, ""},
		{"release after release", []*raftv1.Command{claim(k, "n1", at(0), lease), release(k, "n1", at(time.Second))}, release(k, "n1", at(2*time.Second)), codes.FailedPrecondition, "not claimed", false, "", 0, ""},
		{"complete after takeover", []*raftv1.Command{claim(k, "n1", at(0), lease), claim(k, "n2", at(time.Minute), lease)}, complete(k, "n1", at(2*time.Minute)), codes.FailedPrecondition, `held by "n2"`, false, "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Config{})
			for _, c := range tt.setup {
				mustApply(t, m, c)
			}
			before := m.Revision()
			res, evs := m.Apply(tt.cmd)
			if codes.Code(res.GetCode()) != tt.code || !strings.Contains(res.GetMessage(), tt.msg) {
				t.Fatalf("got %v %q, want %v containing %q", codes.Code(res.GetCode()), res.GetMessage(), tt.code, tt.msg)
			}
			wantRev := before
			if tt.event != "" {
				wantRev++
			}
			if m.Revision() != wantRev || res.GetRevision() != wantRev {
				t.Fatalf("revision %d (result %d), want %d", m.Revision(), res.GetRevision(), wantRev)
			}
			if tt.event == "" && len(evs) != 0 || tt.event != "" && (len(evs) != 1 || evs[0].Type != tt.event || evs[0].Uri != k) {
				t.Fatalf("events %v, want %q", evs, tt.event)
			}
			if tt.code != codes.OK {
				return
			}
			var in *hivemindv1.Intent
			switch r := res.GetResponse().(type) {
			case *raftv1.Result_ClaimIntent:
				in = r.ClaimIntent.GetIntent()
				if r.ClaimIntent.GetGranted() != tt.granted {
					t.Fatalf("granted = %v", r.ClaimIntent.GetGranted())
				}
			case *raftv1.Result_CompleteIntent:
				in = r.CompleteIntent.GetIntent()
			case *raftv1.Result_ReleaseIntent:
				in = r.ReleaseIntent.GetIntent()
			}
			if in.GetHolder() != tt.holder || in.GetState() != tt.state {
				t.Fatalf("intent %v", in)
			}
			if stored, _ := m.Intent(k); !proto.Equal(stored, in) {
				t.Fatalf("stored %v, answered %v", stored, in)
			}
		})
	}
}

func TestIntentLeaseTimesAndPayload(t *testing.T) {
	m := New(Config{})
	_, evs := mustApply(t, m, claim("/i", "n1", at(0), 10*time.Second))
	var p intentPayload
	if err := json.Unmarshal(evs[0].Payload, &p); err != nil {
		t.Fatal(err)
	}
	want := intentPayload{Holder: "n1", State: "claimed", Claims: 1, ExpiresAt: t0.Add(10 * time.Second).Format(time.RFC3339Nano)}
	if p != want {
		t.Fatalf("payload %+v, want %+v", p, want)
	}
	res, _ := mustApply(t, m, claim("/i", "n1", at(4*time.Second), 20*time.Second))
	if got := res.GetClaimIntent().GetIntent().GetExpiresAt().AsTime(); !got.Equal(t0.Add(24 * time.Second)) {
		t.Fatalf("renewal expires at %v, want now + the new lease", got)
	}
	// A leader change never shortens a lease: this one already runs past
	// the floor, so it is left alone.
	mustApply(t, m, leaderChange(at(2*time.Second))) // forced to just after 4s
	if in, _ := m.Intent("/i"); !in.GetExpiresAt().AsTime().Equal(t0.Add(24 * time.Second)) {
		t.Fatalf("leader change moved a long lease to %v", in.GetExpiresAt().AsTime())
	}
	// Released and completed intents are not revived by a leader change.
	mustApply(t, m, release("/i", "n1", at(6*time.Second)))
	mustApply(t, m, leaderChange(at(time.Hour)))
	if in, _ := m.Intent("/i"); in.GetState() != hivemindv1.Intent_STATE_RELEASED {
		t.Fatalf("state %v", in.GetState())
	}
	if m.Revision() != 3 {
		t.Fatalf("revision %d: leader changes must not take revisions", m.Revision())
	}
}

func TestIdempotencyRemembersRejections(t *testing.T) {
	m := New(TestConfig())
	c := complete("/i", "n1", at(0))
	c.IdempotencyKey = "k"
	first, _ := m.Apply(c)
	if codes.Code(first.GetCode()) != codes.FailedPrecondition {
		t.Fatalf("first: %v", first)
	}
	mustApply(t, m, claim("/i", "n1", at(time.Second), time.Minute))
	// Now the same request would succeed, but a retry gets the first answer.
	again, evs := m.Apply(proto.Clone(c).(*raftv1.Command))
	if !proto.Equal(first, again) || len(evs) != 0 {
		t.Fatalf("retry: %v, %d events", again, len(evs))
	}
	if in, _ := m.Intent("/i"); in.GetState() != hivemindv1.Intent_STATE_CLAIMED {
		t.Fatal("the retry was applied")
	}
	// An idempotent write replayed returns its own revision, not the latest.
	p := put("/a", "1")
	p.IdempotencyKey = "p"
	r1, _ := mustApply(t, m, p)
	mustApply(t, m, put("/b", "1"))
	r2, _ := mustApply(t, m, proto.Clone(p).(*raftv1.Command))
	if r2.GetRevision() != r1.GetRevision() || m.Revision() != r1.GetRevision()+1 {
		t.Fatalf("replay revision %d, first %d, machine %d", r2.GetRevision(), r1.GetRevision(), m.Revision())
	}
}

func TestNodeKeysLastWriterWinsTable(t *testing.T) {
	nodePut := func(v string, stamp uint64) *raftv1.Command {
		return &raftv1.Command{Hlc: 1000, Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/nodes/h1/a", Value: []byte(v), Hlc: stamp}}}
	}
	nodeDel := func(key string, prefix bool, stamp uint64) *raftv1.Command {
		return &raftv1.Command{Hlc: 1000, Op: &raftv1.Command_Delete{Delete: &hivemindv1.DeleteRequest{Key: key, Prefix: prefix, Hlc: stamp}}}
	}
	tests := []struct {
		name    string
		cmd     *raftv1.Command
		applied bool
		deleted int64
	}{
		{"older put loses", nodePut("x", 499), false, 0},
		{"equal stamp wins", nodePut("x", 500), true, 0},
		{"newer put wins", nodePut("x", 501), true, 0},
		{"stamp 0 takes the command's (1000), newer", nodePut("x", 0), true, 0},
		{"older delete loses", nodeDel("/nodes/h1/a", false, 499), false, 0},
		{"newer delete wins", nodeDel("/nodes/h1/a", false, 501), true, 1},
		{"prefix delete removes only what it is newer than", nodeDel("/nodes/h1/", true, 600), true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Config{})
			mustApply(t, m, &raftv1.Command{Hlc: 10, Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/nodes/h1/a", Value: []byte("v"), Hlc: 500}}})
			mustApply(t, m, &raftv1.Command{Hlc: 20, Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/nodes/h1/b", Value: []byte("v"), Hlc: 700}}})
			res, evs := mustApply(t, m, tt.cmd)
			wantRev := int64(2)
			if tt.applied {
				wantRev = 3
			}
			if (len(evs) > 0) != tt.applied || m.Revision() != wantRev {
				t.Fatalf("%d events, revision %d, want %d", len(evs), m.Revision(), wantRev)
			}
			if p := res.GetPut(); p != nil && p.GetApplied() != tt.applied {
				t.Fatalf("applied = %v", p.GetApplied())
			}
			if d := res.GetDelete(); d != nil && d.GetDeleted() != tt.deleted {
				t.Fatalf("deleted = %d", d.GetDeleted())
			}
		})
	}
}

func TestEventIDsPastTheSequenceLimit(t *testing.T) {
	m := New(Config{})
	const perTxn, txns = MaxTxnOps, 520 // 66,560 keys: more than 2^16
	for i := 0; i < txns; i++ {
		var ops []*hivemindv1.TxnOp
		for j := 0; j < perTxn; j++ {
			ops = append(ops, tput(fmt.Sprintf("/big/%03d/%03d", i, j), ""))
		}
		mustApply(t, m, txnCmd(&hivemindv1.TxnRequest{Success: ops}))
	}
	_, evs := mustApply(t, m, del("/big/", true))
	if len(evs) != perTxn*txns {
		t.Fatalf("%d events", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Id <= evs[i-1].Id {
			t.Fatalf("event %d id %s does not follow %s", i, evs[i].Id, evs[i-1].Id)
		}
	}
	_, next := mustApply(t, m, put("/after", "x"))
	if next[0].Id <= evs[len(evs)-1].Id {
		t.Fatalf("next command's id %s does not follow %s", next[0].Id, evs[len(evs)-1].Id)
	}
}

func TestEventIDsAndTimes(t *testing.T) {
	m := New(Config{})
	c := put("/a", "1")
	c.Hlc = at(time.Second)
	c.Source = "h7"
	_, evs := mustApply(t, m, c)
	id, err := hlc.ParseID(evs[0].Id)
	if err != nil {
		t.Fatal(err)
	}
	if id != hlc.NewID(hlc.Timestamp(at(time.Second)), "cp1", 0) {
		t.Fatalf("id %v is not built from the command's stamp and proposer", id)
	}
	if !evs[0].Time.AsTime().Equal(t0.Add(time.Second)) || evs[0].Source != "h7" {
		t.Fatalf("time %v source %q", evs[0].Time.AsTime(), evs[0].Source)
	}
	// A command stamped in the past (a new leader with a slower clock)
	// still gets a later id.
	c = put("/b", "1")
	c.Hlc = at(0)
	_, evs2 := mustApply(t, m, c)
	if evs2[0].Id <= evs[0].Id {
		t.Fatalf("id went back: %s after %s", evs2[0].Id, evs[0].Id)
	}
}

func TestEventsFromLimits(t *testing.T) {
	m := New(Config{})
	mustApply(t, m, put("/a/1", "v"))
	mustApply(t, m, put("/a/2", "v"))
	mustApply(t, m, del("/a/", true)) // two events at revision 3
	for _, tt := range []struct {
		from  int64
		max   int
		count int
	}{{1, 0, 4}, {1, -1, 4}, {1, 3, 3}, {3, 10, 2}, {4, 10, 0}, {100, 10, 0}} {
		evs, err := m.EventsFrom(tt.from, tt.max)
		if err != nil || len(evs) != tt.count {
			t.Errorf("EventsFrom(%d, %d) = %d events, %v; want %d", tt.from, tt.max, len(evs), err, tt.count)
		}
	}
	if _, err := m.EventsFrom(0, 10); err == nil || err.Error() != "compacted; oldest retained is 1" {
		t.Fatalf("revision 0: %v", err)
	}
}

func TestRangeLimits(t *testing.T) {
	m := New(Config{})
	var ops []*hivemindv1.TxnOp
	for i := 0; i < 10; i++ {
		for j := 0; j < 120; j++ {
			ops = append(ops, tput(fmt.Sprintf("/r/%02d/%03d", i, j), "v"))
		}
		mustApply(t, m, txnCmd(&hivemindv1.TxnRequest{Success: ops}))
		ops = ops[:0]
	}
	kvs, more, rev := m.Range("/r/", "", 0, false)
	if len(kvs) != DefaultRangeLimit || !more || rev != 10 {
		t.Fatalf("default limit: %d more=%v rev=%d", len(kvs), more, rev)
	}
	kvs, more, _ = m.Range("", "", MaxRangeLimit*2, true)
	if len(kvs) != 1200 || more {
		t.Fatalf("all: %d more=%v", len(kvs), more)
	}
	kvs, _, _ = m.Range("/r/05/", "/r/05/117", 10, false)
	if len(kvs) != 2 || kvs[0].Key != "/r/05/118" {
		t.Fatalf("page after /r/05/117: %v", kvs)
	}
}

func TestRestoreRefusesInconsistentSnapshots(t *testing.T) {
	good := func() *raftv1.Snapshot {
		m := New(Config{})
		mustApply(t, m, put("/a", "1"))
		mustApply(t, m, put("/b", "1"))
		c := claim("/i", "n", at(0), time.Minute)
		c.IdempotencyKey = "k"
		mustApply(t, m, c)
		return proto.Clone(m.Snapshot()).(*raftv1.Snapshot)
	}
	tests := []struct {
		name    string
		corrupt func(s *raftv1.Snapshot)
	}{
		{"keys out of order", func(s *raftv1.Snapshot) { s.Kvs[0], s.Kvs[1] = s.Kvs[1], s.Kvs[0] }},
		{"key from the future", func(s *raftv1.Snapshot) { s.Kvs[0].ModRevision = 99 }},
		{"oldest after revision", func(s *raftv1.Snapshot) { s.OldestRevision = 10 }},
		{"event out of order", func(s *raftv1.Snapshot) { s.Events[0], s.Events[2] = s.Events[2], s.Events[0] }},
		{"repeated intent", func(s *raftv1.Snapshot) { s.Intents = append(s.Intents, s.Intents[0]) }},
		{"idempotency key without a result", func(s *raftv1.Snapshot) { s.Applied[0].Result = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(Config{})
			mustApply(t, m, put("/mine", "x"))
			before := m.Snapshot()
			s := good()
			tt.corrupt(s)
			if err := m.Restore(s); err == nil {
				t.Fatal("accepted")
			}
			if !proto.Equal(before, m.Snapshot()) {
				t.Fatal("a refused snapshot changed the state")
			}
		})
	}
	if err := New(Config{}).Restore(good()); err != nil {
		t.Fatalf("good snapshot refused: %v", err)
	}
}

func TestRestoreIntoSmallerWindowKeepsNewestKeys(t *testing.T) {
	big := New(Config{IdempotencyWindow: 100})
	for i := 0; i < 20; i++ {
		c := put(fmt.Sprintf("/k%d", i), "v")
		c.IdempotencyKey = fmt.Sprint(i)
		mustApply(t, big, c)
	}
	small := New(TestConfig()) // window of 8
	if err := small.Restore(big.Snapshot()); err != nil {
		t.Fatal(err)
	}
	applied := small.Snapshot().GetApplied()
	if len(applied) != 8 || applied[0].GetIdempotencyKey() != "12" || applied[7].GetIdempotencyKey() != "19" {
		t.Fatalf("window after restore: %v", applied)
	}
}

// TestReadsDuringApply is for the race detector: readers run while the
// apply loop writes.
func TestReadsDuringApply(t *testing.T) {
	m := New(TestConfig())
	done := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				m.Get("/app/k1")
				m.Range("/app/", "", 10, false)
				m.Intent("/i/0")
				if evs, err := m.EventsFrom(m.OldestRevision(), 20); err == nil {
					for _, e := range evs {
						_ = proto.Size(e)
					}
				}
				_ = proto.Size(m.Snapshot())
			}
		}()
	}
	for _, c := range fullScript() {
		m.Apply(c)
	}
	close(done)
	wg.Wait()
}

// fullScript exercises every kind of command, including ones that are
// rejected or change nothing.
func fullScript() []*raftv1.Command {
	var cmds []*raftv1.Command
	add := func(c *raftv1.Command, d time.Duration) {
		c.Hlc = at(d)
		c.Proposer = "cp1"
		cmds = append(cmds, c)
	}
	for i := 0; i < 40; i++ {
		d := time.Duration(i) * time.Second
		c := put(fmt.Sprintf("/app/k%d", i%7), fmt.Sprint(i))
		c.IdempotencyKey = fmt.Sprint("put", i%11) // repeats: some are replays
		add(c, d)
		add(&raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: fmt.Sprintf("/nodes/h%d/addr", i%3), Value: []byte(fmt.Sprint(i)), Hlc: uint64(1000 - i*(i%2))}}}, d)
		add(txnCmd(&hivemindv1.TxnRequest{
			Compares: []*hivemindv1.Compare{{Key: "/app/k1", Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_GREATER, Number: int64(i % 4)}},
			Success:  []*hivemindv1.TxnOp{tput("/txn/ok", fmt.Sprint(i)), tget("/app/k1")},
			Failure:  []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: "/app/", Prefix: true}}}},
		}), d)
		add(&raftv1.Command{Op: &raftv1.Command_AppendEvent{AppendEvent: &hivemindv1.AppendEventRequest{Type: "host.updated", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/nodes/h1", Payload: []byte{byte(i)}}}}, d)
		add(claim(fmt.Sprintf("/i/%d", i%4), fmt.Sprint("n", i%3), 0, 5*time.Second), d)
		switch i % 5 {
		case 0:
			add(complete(fmt.Sprintf("/i/%d", i%4), fmt.Sprint("n", i%3), 0), d)
		case 1:
			add(release(fmt.Sprintf("/i/%d", (i+1)%4), "n1", 0), d)
		case 2:
			add(leaderChange(0), d-time.Second) // a slower new leader
		case 3:
			add(put("bad key", "x"), d)
		case 4:
			add(&raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: int64(i * 3)}}}, d)
		}
	}
	return cmds
}

// TestDeterminismAndRestoreAtEveryPoint feeds the full script to two
// machines and, at several points, to a machine restored from a marshalled
// snapshot; all must give the same results, events and final state.
func TestDeterminismAndRestoreAtEveryPoint(t *testing.T) {
	cmds := fullScript()
	for _, cut := range []int{0, 1, 37, len(cmds) / 2, len(cmds) - 1} {
		a, b := New(TestConfig()), New(TestConfig())
		for _, c := range cmds[:cut] {
			a.Apply(proto.Clone(c).(*raftv1.Command))
			b.Apply(proto.Clone(c).(*raftv1.Command))
		}
		data, err := proto.Marshal(a.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		var snap raftv1.Snapshot
		if err := proto.Unmarshal(data, &snap); err != nil {
			t.Fatal(err)
		}
		r := New(TestConfig())
		if err := r.Restore(&snap); err != nil {
			t.Fatal(err)
		}
		for i, c := range cmds[cut:] {
			ra, ea := a.Apply(proto.Clone(c).(*raftv1.Command))
			rb, eb := b.Apply(proto.Clone(c).(*raftv1.Command))
			rr, er := r.Apply(proto.Clone(c).(*raftv1.Command))
			if !proto.Equal(ra, rb) || !proto.Equal(ra, rr) || !sameEvents(ea, eb) || !sameEvents(ea, er) {
				t.Fatalf("cut %d, command %d: results or events differ:\n%v\n%v\n%v", cut, cut+i, ra, rb, rr)
			}
		}
		if !proto.Equal(a.Snapshot(), b.Snapshot()) || !proto.Equal(a.Snapshot(), r.Snapshot()) {
			t.Fatalf("cut %d: final states differ", cut)
		}
	}
}

func sameEvents(a, b []*hivemindv1.Event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestScriptInvariants checks, over the full script, the rules every
// command obeys: revisions move by one or not at all, and only when there
// are events; all events of a command share its revision; ids increase.
func TestScriptInvariants(t *testing.T) {
	m := New(TestConfig())
	var lastID string
	for i, c := range fullScript() {
		before := m.Revision()
		res, evs := m.Apply(c)
		after := m.Revision()
		switch {
		case len(evs) == 0 && after != before, len(evs) > 0 && after != before+1:
			t.Fatalf("command %d: %d events moved revision %d → %d", i, len(evs), before, after)
		case res.GetRevision() > after:
			t.Fatalf("command %d: result revision %d after %d", i, res.GetRevision(), after)
		case res.GetCode() != 0 && len(evs) > 0:
			t.Fatalf("command %d: rejected with events", i)
		}
		for _, e := range evs {
			if e.Revision != after || e.Id <= lastID {
				t.Fatalf("command %d: event %s@%d after %s", i, e.Id, e.Revision, lastID)
			}
			lastID = e.Id
		}
	}
}
