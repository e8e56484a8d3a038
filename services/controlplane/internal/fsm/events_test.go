package fsm

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// TestEveryEmittedTypeIsReserved drives the machine through every kind of
// change and checks that no type it emitted could be appended by a caller:
// a new event type the machine learns is reserved without another list to
// keep up to date, or this test fails.
func TestEveryEmittedTypeIsReserved(t *testing.T) {
	m := New(Config{})
	cmds := append(script(),
		complete("/i/0", "n1", at(time.Second)),
		claim("/i/5", "n1", at(6*time.Second), 5*time.Second), // renewed
		release("/i/10", "n1", at(11*time.Second)),
		join("h1", 1), setState("h1", suspect, 1), setState("h1", failed, 1), setState("h1", alive, 2), leave("h1"),
		&raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: 3}}},
	)
	seen := map[string]bool{}
	for _, c := range cmds {
		_, evs := mustApply(t, m, c)
		for _, e := range evs {
			seen[e.GetType()] = true
		}
	}
	for _, typ := range EmittedEventTypes {
		if !seen[typ] {
			t.Errorf("%s is listed as emitted but the script never produced it", typ)
		}
	}
	for typ := range seen {
		if !slices.Contains(EmittedEventTypes, typ) {
			t.Errorf("the machine emitted %s, which EmittedEventTypes does not list", typ)
		}
		if ReservedEventType(typ) == "" {
			t.Errorf("%s is emitted by the machine but a caller may append it", typ)
		}
	}
}

func TestReservedEventTypes(t *testing.T) {
	for typ, want := range map[string]string{
		"kv.put":               "kv",
		"kv.delete":            "kv",
		"kv.anything":          "kv",
		"kv":                   "kv",
		"member.failed":        "member",
		"member.rejoined":      "member",
		"cluster.compacted":    "cluster",
		"intent.completed":     "intent",
		"subscription.created": "subscription",
		"kvstore.put":          "",
		"host.updated":         "",
		"app.note":             "",
		"members.x":            "",
		"notifier.test":        "",
	} {
		if got := ReservedEventType(typ); got != want {
			t.Errorf("ReservedEventType(%q) = %q, want %q", typ, got, want)
		}
	}
}

// TestForgedAppendsAreRejectedWhenApplied: the rule holds inside the
// machine too, so a command that reached the log without passing the API
// (a forwarded one) changes nothing.
func TestForgedAppendsAreRejectedWhenApplied(t *testing.T) {
	m := New(Config{})
	mustApply(t, m, put("/nodes/host1/host", `{"seq":1}`))
	for _, tc := range []struct {
		req   *hivemindv1.AppendEventRequest
		field string
	}{
		{&hivemindv1.AppendEventRequest{Type: "kv.delete", Uri: "/nodes/host1/host"}, "type"},
		{&hivemindv1.AppendEventRequest{Type: "kv.put", Uri: "/nodes/host1/host", Payload: []byte(`{"seq":99999999999}`)}, "type"},
		{&hivemindv1.AppendEventRequest{Type: "member.failed", Uri: "/members/host1", Source: "cp1"}, "type"},
		{&hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/members/host1"}, "uri"},
	} {
		res, evs := m.Apply(appendEv(tc.req))
		if codes.Code(res.GetCode()) != codes.PermissionDenied || !strings.HasPrefix(res.GetMessage(), tc.field+" not allowed:") || len(evs) != 0 {
			t.Errorf("%s on %s: %s %q, %d events; want PERMISSION_DENIED on %s and nothing applied", tc.req.GetType(), tc.req.GetUri(), codes.Code(res.GetCode()), res.GetMessage(), len(evs), tc.field)
		}
	}
	if m.Revision() != 1 {
		t.Fatalf("revision %d after forged appends, want 1", m.Revision())
	}
}

// TestAppendedEventSourceIsTheCommands: the request's source field is never
// the event's.
func TestAppendedEventSourceIsTheCommands(t *testing.T) {
	m := New(Config{})
	c := appendEv(&hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/app/x", Source: "cp1"})
	c.Source, c.Proposer = "host2", "cp2"
	_, evs := mustApply(t, m, c)
	if evs[0].GetSource() != "host2" {
		t.Fatalf("source %q, want the command's host2", evs[0].GetSource())
	}
	c = appendEv(&hivemindv1.AppendEventRequest{Type: "app.note", Uri: "/app/x", Source: "cp1"})
	c.Proposer = "cp2"
	_, evs = mustApply(t, m, c)
	if evs[0].GetSource() != "cp2" {
		t.Fatalf("source %q without a command source, want the proposer cp2", evs[0].GetSource())
	}
}

func TestCheckWriterClock(t *testing.T) {
	leader := at(time.Hour)
	stamp := func(d time.Duration) uint64 { return at(time.Hour + d) }
	putAt := func(w uint64) *raftv1.Command {
		c := put("/nodes/h1/x", "v")
		c.Hlc, c.Op.(*raftv1.Command_Put).Put.Hlc = leader, w
		return c
	}
	delAt := func(w uint64) *raftv1.Command {
		c := del("/nodes/h1/x", false)
		c.Hlc, c.Op.(*raftv1.Command_Delete).Delete.Hlc = leader, w
		return c
	}
	for _, tc := range []struct {
		name string
		cmd  *raftv1.Command
		max  time.Duration
		ok   bool
	}{
		{"no writer stamp", putAt(0), time.Minute, true},
		{"behind", putAt(stamp(-time.Hour)), time.Minute, true},
		{"at the bound", putAt(stamp(time.Minute)), time.Minute, true},
		{"past the bound", putAt(stamp(time.Minute + time.Millisecond)), time.Minute, false},
		{"the end of time", putAt(^uint64(0)), time.Minute, false},
		{"delete past the bound", delAt(stamp(2 * time.Minute)), time.Minute, false},
		{"a wider bound", putAt(stamp(2 * time.Minute)), 5 * time.Minute, true},
		{"no bound", putAt(^uint64(0)), 0, true},
	} {
		err := CheckWriterClock(tc.cmd, tc.max)
		var fe *FieldError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && (!errors.As(err, &fe) || fe.Field != "hlc" || fe.Code != codes.InvalidArgument || !strings.Contains(err.Error(), "ahead")):
			t.Errorf("%s: %v, want INVALID_ARGUMENT on hlc saying it is ahead", tc.name, err)
		}
	}
}

// TestRangeHiding: hidden keys neither appear nor count towards the limit,
// and more says whether visible keys follow.
func TestRangeHiding(t *testing.T) {
	m := New(Config{})
	for _, k := range []string{"/n/a", "/n/s/1", "/n/s/2", "/n/s/3", "/n/z"} {
		mustApply(t, m, put(k, "v"))
	}
	hidden := func(k string) bool { return strings.HasPrefix(k, "/n/s/") }
	keys := func(kvs []*hivemindv1.KeyValue) (out []string) {
		for _, kv := range kvs {
			out = append(out, kv.GetKey())
		}
		return out
	}
	kvs, more, _ := m.RangeHiding("/n/", "", 2, false, hidden)
	if got := keys(kvs); !slices.Equal(got, []string{"/n/a", "/n/z"}) || more {
		t.Fatalf("range with a limit of 2: %v more=%v, want [/n/a /n/z] and no more", got, more)
	}
	kvs, more, _ = m.RangeHiding("/n/", "", 1, true, hidden)
	if got := keys(kvs); !slices.Equal(got, []string{"/n/a"}) || !more {
		t.Fatalf("range with a limit of 1: %v more=%v, want [/n/a] and more", got, more)
	}
	kvs, more, _ = m.RangeHiding("/n/s/", "", 0, false, hidden)
	if len(kvs) != 0 || more {
		t.Fatalf("range of hidden keys alone: %v more=%v, want nothing", keys(kvs), more)
	}
	if kvs, _, _ := m.Range("/n/", "", 0, false); len(kvs) != 5 {
		t.Fatalf("range hiding nothing: %v", keys(kvs))
	}
}
