package dnsnode

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// offlineSyncer applies events as the durable path does, without a
// control plane: what arrives on the watch is handed to apply.
func offlineSyncer() *syncer {
	return &syncer{state: hoststate.New(), log: slog.New(slog.NewTextHandler(io.Discard, nil)), touched: func() {}}
}

// The events of the state machine, in the shapes package fsm emits them.

func hostPut(rev int64, rec *hivemindv1.HostRecord) *hivemindv1.Event {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	key := hostKey(rec.GetNode())
	return &hivemindv1.Event{Revision: rev, Type: "kv.put", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: key, Payload: b,
		Kv: &hivemindv1.KeyValue{Key: key, Value: b, CreateRevision: 1, ModRevision: rev, Version: 1, Hlc: rec.GetHlc()}}
}

func memberEvent(rev int64, name string, st hivemindv1.MemberState, hlcStamp uint64) *hivemindv1.Event {
	b := registry.Encode(&hivemindv1.ClusterMember{Name: name, State: st, Incarnation: 1, StateRevision: rev, StateChangedAt: timestamppb.Now()})
	key := registry.Key(name)
	return &hivemindv1.Event{Revision: rev, Type: registry.EventFor(st), Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: key, Source: name, Payload: b,
		Kv: &hivemindv1.KeyValue{Key: key, Value: b, CreateRevision: 1, ModRevision: rev, Version: 2, Hlc: hlcStamp}}
}

// forged is ev as AppendEvent would carry it: type, uri, source and
// payload as the caller chose, and no kv, which only the state machine
// sets.
func forged(ev *hivemindv1.Event) *hivemindv1.Event {
	out := proto.Clone(ev).(*hivemindv1.Event)
	out.Kv = nil
	return out
}

// The attacks of issue 13 on the dns processor, as appended events: a
// kv.delete of host1's record (NXDOMAIN while the record is stored), a
// kv.put with a made-up address and a huge seq (served, and it beat the
// host's real updates), a member.failed with a spoofed source. None may
// change what is served; the host's own next update still applies.
func TestForgedEventsChangeNothing(t *testing.T) {
	s := offlineSyncer()
	s.apply(hostPut(2, hostRecord("host1", 1, "10.0.0.1")))
	if !served(s.state.Snapshot(), "host1", "10.0.0.1") {
		t.Fatal("a genuine record was not applied")
	}

	evil := hostRecord("host1", 1<<62, "6.6.6.6")
	evil.Hlc = 1<<63 - 1
	for _, ev := range []*hivemindv1.Event{
		{Revision: 3, Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: "/nodes/host1/host"},
		forged(hostPut(4, evil)),
		forged(memberEvent(5, "host1", hivemindv1.MemberState_MEMBER_STATE_FAILED, 1<<62)),
		forged(memberEvent(6, "host1", hivemindv1.MemberState_MEMBER_STATE_LEFT, 1<<62)),
		// A kv whose key is not the uri is no record of that uri.
		{Revision: 7, Type: "kv.delete", Uri: "/nodes/host1/host", Kv: &hivemindv1.KeyValue{Key: "/nodes/other/host"}},
	} {
		s.apply(ev)
		snap := s.state.Snapshot()
		h, ok := snap.Host("host1")
		if !ok || h.Failed || !served(snap, "host1", "10.0.0.1") || snap.Seq("host1") != 1 {
			t.Fatalf("after a forged %s at %d: host1 %+v (held %v), seq %d", ev.GetType(), ev.GetRevision(), h, ok, snap.Seq("host1"))
		}
		if got := s.state.Revision(); got != uint64(ev.GetRevision()) {
			t.Errorf("a skipped event moves the revision: %d, want %d", got, ev.GetRevision())
		}
	}

	s.apply(hostPut(8, hostRecord("host1", 2, "10.0.0.2")))
	if !served(s.state.Snapshot(), "host1", "10.0.0.2") {
		t.Error("the host's own update lost to a forged one")
	}
	// The genuine member events still work.
	s.apply(memberEvent(9, "host1", hivemindv1.MemberState_MEMBER_STATE_FAILED, 9<<16))
	if h, _ := s.state.Snapshot().Host("host1"); !h.Failed {
		t.Error("a genuine member.failed was not applied")
	}
}

// FuzzApplyEvents feeds arbitrary event sequences (a WatchResponse, as the
// control plane streams them) to the durable path. It must not panic, and
// the hosts it serves must be those the state machine's own events alone
// give: dropping every event without a kv (all an AppendEvent can make)
// changes nothing.
func FuzzApplyEvents(f *testing.F) {
	evil := hostRecord("host1", 1<<62, "6.6.6.6")
	evil.Hlc = 1<<63 - 1
	seeds := [][]*hivemindv1.Event{
		{hostPut(2, hostRecord("host1", 1, "10.0.0.1")), {Revision: 3, Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: "/nodes/host1/host"}},
		{hostPut(2, hostRecord("host1", 1, "10.0.0.1")), forged(hostPut(3, evil)), hostPut(4, hostRecord("host1", 2, "10.0.0.2"))},
		{hostPut(2, hostRecord("host1", 1, "10.0.0.1")), forged(memberEvent(3, "host1", hivemindv1.MemberState_MEMBER_STATE_FAILED, 1<<62))},
		{hostPut(2, hostRecord("host1", 1, "10.0.0.1")), memberEvent(3, "host1", hivemindv1.MemberState_MEMBER_STATE_FAILED, 3<<16), memberEvent(4, "host1", hivemindv1.MemberState_MEMBER_STATE_ALIVE, 4<<16)},
		{{Revision: 2, Type: "app.note", Uri: "/notifier/subscriptions/x"}, {Revision: 3, Type: "kv.put", Uri: "/nodes/h/host", Kv: &hivemindv1.KeyValue{Key: "/nodes/h/host", Value: []byte{0xff}}}},
		{memberEvent(2, "host2", hivemindv1.MemberState_MEMBER_STATE_LEFT, 2<<16), {Revision: 3, Type: "member.failed", Uri: "/members/", Kv: &hivemindv1.KeyValue{Key: "/members/"}}},
	}
	for _, evs := range seeds {
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
		all, genuine := offlineSyncer(), offlineSyncer()
		for _, ev := range resp.GetEvents() {
			all.apply(ev)
			if ev.GetKv() != nil {
				genuine.apply(ev)
			}
		}
		got, want := hostsOf(all.state.Snapshot()), hostsOf(genuine.state.Snapshot())
		if !maps.Equal(got, want) {
			t.Errorf("events without a kv changed the hosts:\n got %v\nwant %v", got, want)
		}
	})
}

// hostsOf sums up what a snapshot serves: per host, its seq, whether it is
// failed and its first address.
func hostsOf(s *hoststate.Snapshot) map[string]string {
	out := map[string]string{}
	for _, h := range s.Hosts() {
		addr := ""
		if len(h.Addrs) > 0 {
			addr = h.Addrs[0].String()
		}
		out[h.Name] = fmt.Sprintf("seq %d failed %v addr %s", h.Seq, h.Failed, addr)
	}
	for name, seq := range s.Bootstrap().Removed {
		out[name] += fmt.Sprintf(" removed at seq %d", seq)
	}
	return out
}
