package cluster

import (
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// memberEvent is a member event in the shape the state machine emits it.
func memberEvent(rev int64, name string, st hivemindv1.MemberState) *hivemindv1.Event {
	b := registry.Encode(&hivemindv1.ClusterMember{Name: name, State: st, Incarnation: 1, StateRevision: rev, StateChangedAt: timestamppb.Now()})
	key := registry.Key(name)
	return &hivemindv1.Event{Id: "id", Revision: rev, Type: registry.EventFor(st), Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: key, Source: name, Payload: b,
		Kv: &hivemindv1.KeyValue{Key: key, Value: b, CreateRevision: 1, ModRevision: rev, Version: 2, Hlc: uint64(rev) << 16}}
}

// Issue 13: an appended member.failed with a spoofed source was taken as
// the registry's word, and an appended one whose payload did not decode
// ended every membership watch (and each retry ended again on it). Both
// are skipped; the events around them still arrive.
func TestMemberEventsSkipsWhatTheRegistryDidNotSay(t *testing.T) {
	alive := memberEvent(2, "host1", hivemindv1.MemberState_MEMBER_STATE_ALIVE)
	spoofed := memberEvent(3, "host1", hivemindv1.MemberState_MEMBER_STATE_FAILED)
	spoofed.Kv, spoofed.Source = nil, "cp1"
	garbage := &hivemindv1.Event{Revision: 4, Type: registry.EventFailed, Uri: "/members/host1", Payload: []byte("{")}
	failed := memberEvent(5, "host2", hivemindv1.MemberState_MEMBER_STATE_FAILED)

	got := MemberEvents(quiet, []*hivemindv1.Event{alive, spoofed, garbage, failed})
	if len(got) != 2 || got[0].GetRevision() != 2 || got[1].GetRevision() != 5 ||
		got[1].GetMember().GetName() != "host2" || got[1].GetMember().GetState() != hivemindv1.MemberState_MEMBER_STATE_FAILED {
		t.Fatalf("member events %v, want host1 alive at 2 and host2 failed at 5 only", got)
	}
}

// FuzzMemberEvents: arbitrary event sequences never panic, and events
// without a kv (all an AppendEvent can make) never show up as members.
func FuzzMemberEvents(f *testing.F) {
	spoofed := memberEvent(3, "host1", hivemindv1.MemberState_MEMBER_STATE_FAILED)
	spoofed.Kv, spoofed.Source = nil, "cp1"
	for _, evs := range [][]*hivemindv1.Event{
		{memberEvent(2, "host1", hivemindv1.MemberState_MEMBER_STATE_ALIVE), spoofed},
		{{Revision: 2, Type: registry.EventFailed, Uri: "/members/host1", Payload: []byte("{")}},
		{{Revision: 2, Type: "kv.delete", Uri: "/nodes/host1/host"}, {Revision: 3, Type: "app.note", Uri: "/notifier/subscriptions/x"}},
		{{Revision: 2, Type: registry.EventLeft, Uri: "/members/", Kv: &hivemindv1.KeyValue{Key: "/members/", Value: []byte(`{"state":"left"}`)}}},
	} {
		b, err := proto.Marshal(&hivemindv1.WatchResponse{Events: evs})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var resp hivemindv1.WatchResponse
		if proto.Unmarshal(b, &resp) != nil {
			return
		}
		var genuine []*hivemindv1.Event
		for _, ev := range resp.GetEvents() {
			if ev.GetKv() != nil {
				genuine = append(genuine, ev)
			}
		}
		got, want := MemberEvents(quiet, resp.GetEvents()), MemberEvents(quiet, genuine)
		if len(got) != len(want) {
			t.Fatalf("%d member events, %d from the events with a kv", len(got), len(want))
		}
		for i := range got {
			if !proto.Equal(got[i], want[i]) {
				t.Fatalf("member event %d: %v, want %v", i, got[i], want[i])
			}
			if m := got[i].GetMember(); registry.EventFor(m.GetState()) != got[i].GetType() && got[i].GetType() != registry.EventJoined {
				t.Fatalf("member event %d says %s of a member in state %v", i, got[i].GetType(), m.GetState())
			}
		}
	})
}
