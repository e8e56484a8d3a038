package announce

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func quietRegistry() *Registry {
	return New("host1", nil, time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// instanceEvent is the kv.put or kv.delete the state machine emits for an
// instance key.
func instanceEvent(rev int64, key string, a *hivemindv1.Announcement, del bool) *hivemindv1.Event {
	b, _ := proto.Marshal(a)
	typ, hook := "kv.put", hivemindv1.Hook_HOOK_MODIFY
	if del {
		typ, hook = "kv.delete", hivemindv1.Hook_HOOK_DELETE
	}
	return &hivemindv1.Event{Revision: rev, Type: typ, Hook: hook, Uri: key, Payload: b,
		Kv: &hivemindv1.KeyValue{Key: key, Value: b, CreateRevision: 1, ModRevision: rev}}
}

// A service watch takes instances only from the state machine's key
// events under the service: appended look-alikes (a kv.delete without a
// kv, a put whose kv is another key) change nothing.
func TestWatchTakesOnlyKeyEvents(t *testing.T) {
	r := quietRegistry()
	all := map[string]*hivemindv1.Announcement{}
	web1 := &hivemindv1.Announcement{Service: "web", Instance: "host1", Address: "10.0.0.1:80", Node: "host1"}
	r.applyEvent(all, ServicePrefix("web"), instanceEvent(2, Key("web", "host1"), web1, false))
	if all[Key("web", "host1")] == nil {
		t.Fatal("a genuine put was not applied")
	}
	evil := &hivemindv1.Announcement{Service: "web", Instance: "evil", Address: "6.6.6.6:80"}
	for _, ev := range []*hivemindv1.Event{
		{Revision: 3, Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: Key("web", "host1")},
		{Revision: 4, Type: "kv.put", Uri: Key("web", "evil"), Payload: func() []byte { b, _ := proto.Marshal(evil); return b }()},
		{Revision: 5, Type: "app.note", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: Key("web", "host1"), Kv: &hivemindv1.KeyValue{Key: Key("web", "host1")}},
		instanceEvent(6, Key("db", "x"), evil, false), // another service's key
	} {
		r.applyEvent(all, ServicePrefix("web"), ev)
	}
	if len(all) != 1 || !proto.Equal(all[Key("web", "host1")], web1) {
		t.Errorf("instances after forged events: %v", all)
	}
	r.applyEvent(all, ServicePrefix("web"), instanceEvent(7, Key("web", "host1"), web1, true))
	if len(all) != 0 {
		t.Errorf("a genuine delete was not applied: %v", all)
	}
}

// FuzzWatchEvents: arbitrary event sequences never panic, and events
// without a kv (all an AppendEvent can make) never change the instances a
// service watch holds.
func FuzzWatchEvents(f *testing.F) {
	web1 := &hivemindv1.Announcement{Service: "web", Instance: "host1", Address: "10.0.0.1:80", Node: "host1"}
	for _, evs := range [][]*hivemindv1.Event{
		{instanceEvent(2, Key("web", "host1"), web1, false), {Revision: 3, Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: Key("web", "host1")}},
		{{Revision: 2, Type: "kv.put", Uri: Key("web", "x"), Payload: []byte{0xff}}, {Revision: 3, Type: "app.note", Uri: "/notifier/subscriptions/x"}},
		{{Revision: 2, Type: "member.failed", Uri: "/members/host1", Source: "host1", Payload: []byte(`{"name":"host1","state":"failed"}`)}},
		{{Revision: 2, Type: "kv.put", Uri: Key("web", "y"), Kv: &hivemindv1.KeyValue{Key: Key("web", "y"), Value: []byte{0x0a, 0xff}}}},
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
		r := quietRegistry()
		got, want := map[string]*hivemindv1.Announcement{}, map[string]*hivemindv1.Announcement{}
		for _, ev := range resp.GetEvents() {
			r.applyEvent(got, ServicePrefix("web"), ev)
			if ev.GetKv() != nil {
				r.applyEvent(want, ServicePrefix("web"), ev)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%d instances, %d from the events with a kv", len(got), len(want))
		}
		for k, a := range got {
			if !proto.Equal(a, want[k]) {
				t.Fatalf("instance %s: %v, from the events with a kv %v", k, a, want[k])
			}
		}
	})
}
