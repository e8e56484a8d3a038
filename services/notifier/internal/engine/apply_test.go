package engine

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// offline returns an engine whose loop state is driven by hand: apply
// runs as in the loop, and a pair it starts gives up at once (the context
// is done and no worker slot is ever free), so nothing reaches a network.
func offline(t testing.TB) (*Engine, context.Context) {
	t.Helper()
	c, err := filter.NewCompiler(filter.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	e := &Engine{
		cfg:     Config{Name: "notifier1", Compiler: c},
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		subs:    subscription.NewIndex(),
		secrets: map[string]string{},
		pairs:   map[string]*pair{},
		results: make(chan result, 1<<16),
		sem:     make(chan struct{}), // never free
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	t.Cleanup(e.wg.Wait)
	return e, ctx
}

// subPut is the kv.put the state machine emits when sub is stored.
func subPut(t testing.TB, rev int64, sub *hivemindv1.Subscription) *hivemindv1.Event {
	b, err := proto.Marshal(sub)
	if err != nil {
		t.Fatal(err)
	}
	key := subscription.Key(sub.GetName())
	kv := &hivemindv1.KeyValue{Key: key, Value: b, CreateRevision: rev, ModRevision: rev, Version: 1}
	return &hivemindv1.Event{Id: "e", Revision: rev, Type: "kv.put", Hook: hivemindv1.Hook_HOOK_CREATE, Uri: key, Payload: b, Kv: kv}
}

// Issue 13: one AppendEvent of type app.note under /notifier/subscriptions/
// panicked every notifier in the subscription loader. Events that only
// look like subscription changes are skipped and change nothing.
func TestAppendedEventsUnderSubscriptionsChangeNothing(t *testing.T) {
	e, ctx := offline(t)
	e.apply(ctx, subPut(t, 2, &hivemindv1.Subscription{Name: "s", Target: "https://example.com/hook", Prefix: "/app/"}))
	if e.subs.Get("s") == nil {
		t.Fatal("a stored subscription was not loaded")
	}
	forged := &hivemindv1.Subscription{Name: "evil", Target: "https://attacker.example/", Prefix: "/"}
	b, _ := proto.Marshal(forged)
	for _, ev := range []*hivemindv1.Event{
		{Revision: 3, Type: "app.note", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/notifier/subscriptions/x"},
		{Revision: 4, Type: "app.note", Uri: "/notifier/subscriptions/"},
		{Revision: 5, Type: "kv.put", Hook: hivemindv1.Hook_HOOK_CREATE, Uri: subscription.Key("evil"), Payload: b},
		{Revision: 6, Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: subscription.Key("s")},
		// A key that is not the uri: the kv decides, and it does not match.
		{Revision: 7, Type: "kv.delete", Uri: subscription.Key("s"), Kv: &hivemindv1.KeyValue{Key: subscription.Key("other")}},
	} {
		e.apply(ctx, ev)
	}
	if e.subs.Len() != 1 || e.subs.Get("s") == nil {
		t.Errorf("subscriptions after forged events: %v, want only s", e.subs.Names())
	}
	if len(e.pairs) != 0 {
		t.Errorf("forged events under /notifier/ made %d deliveries", len(e.pairs))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// keyEvent is a kv.put or kv.delete the state machine emits for key.
func keyEvent(rev int64, key string, value []byte, del bool) *hivemindv1.Event {
	typ, hook := "kv.put", hivemindv1.Hook_HOOK_MODIFY
	if del {
		typ, hook = "kv.delete", hivemindv1.Hook_HOOK_DELETE
	}
	return &hivemindv1.Event{Revision: rev, Type: typ, Hook: hook, Uri: key, Payload: value,
		Kv: &hivemindv1.KeyValue{Key: key, Value: value, CreateRevision: 1, ModRevision: rev}}
}

// A subscription's secret arrives on its own key, in the transaction that
// writes the record; records from before the split keep theirs inline,
// and a rewrite of the record (Disable) does not lose the secret.
func TestSecretsApartFromRecords(t *testing.T) {
	e, ctx := offline(t)
	secretOf := func(name string) string { return e.subs.Get(name).Sub.GetSecret() }

	rec := &hivemindv1.Subscription{Name: "new", Target: "https://example.com/", Prefix: "/app/"}
	e.apply(ctx, keyEvent(2, subscription.SecretKey("new"), []byte("whsec_c2VjcmV0"), false))
	e.apply(ctx, subPut(t, 2, rec))
	if got := secretOf("new"); got != "whsec_c2VjcmV0" {
		t.Errorf("secret of a split subscription: %q", got)
	}
	disabled := proto.Clone(rec).(*hivemindv1.Subscription)
	disabled.Disabled = true
	b, _ := proto.Marshal(disabled)
	e.apply(ctx, keyEvent(3, subscription.Key("new"), b, false))
	if got := secretOf("new"); got != "whsec_c2VjcmV0" || !e.subs.Get("new").Sub.GetDisabled() {
		t.Errorf("after the record was rewritten: secret %q, disabled %v", got, e.subs.Get("new").Sub.GetDisabled())
	}

	old := &hivemindv1.Subscription{Name: "old", Target: "https://example.com/", Prefix: "/app/", Secret: "whsec_b2xk"}
	e.apply(ctx, subPut(t, 4, old))
	if got := secretOf("old"); got != "whsec_b2xk" {
		t.Errorf("inline secret: %q", got)
	}
	// The record first, then the secret: the loaded subscription gets it.
	late := &hivemindv1.Subscription{Name: "late", Target: "https://example.com/", Prefix: "/app/"}
	e.apply(ctx, subPut(t, 5, late))
	e.apply(ctx, keyEvent(5, subscription.SecretKey("late"), []byte("whsec_bGF0ZQ=="), false))
	if got := secretOf("late"); got != "whsec_bGF0ZQ==" {
		t.Errorf("secret after its record: %q", got)
	}

	// A forged secret (no kv) is not taken.
	e.apply(ctx, &hivemindv1.Event{Revision: 6, Type: "kv.put", Uri: subscription.SecretKey("new"), Payload: []byte("whsec_ZXZpbA==")})
	if got := secretOf("new"); got != "whsec_c2VjcmV0" {
		t.Errorf("a forged secret event changed the secret to %q", got)
	}

	e.apply(ctx, keyEvent(7, subscription.SecretKey("new"), nil, true))
	e.apply(ctx, keyEvent(7, subscription.Key("new"), nil, true))
	if e.subs.Get("new") != nil || e.secrets["new"] != "" {
		t.Errorf("deleted subscription still held: %v, secret %q", e.subs.Get("new"), e.secrets["new"])
	}
}

// FuzzApply feeds arbitrary event sequences (a WatchResponse, as the
// control plane streams them) to the engine's loop state. It must not
// panic, and the subscriptions and secrets it holds must be those the
// state machine's own events alone give: dropping every event without a
// kv (all an AppendEvent can make) changes none of them.
func FuzzApply(f *testing.F) {
	sub := &hivemindv1.Subscription{Name: "s", Target: "https://example.com/hook", Prefix: "/"}
	evil := &hivemindv1.Subscription{Name: "evil", Target: "https://attacker.example/", Prefix: "/", Secret: "whsec_ZXZpbA=="}
	b, _ := proto.Marshal(evil)
	failed := []byte(`{"name":"host1","state":"failed","incarnation":1}`)
	for _, evs := range [][]*hivemindv1.Event{
		{{Revision: 2, Type: "app.note", Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/notifier/subscriptions/x"}},
		{{Revision: 2, Type: "app.note", Uri: "/notifier/subscriptions/"}, {Revision: 3, Type: "app.note", Uri: "/notifier/secrets/"}},
		{subPut(f, 2, sub), {Revision: 3, Type: "kv.put", Uri: subscription.Key("evil"), Payload: b}, {Revision: 4, Type: "kv.delete", Uri: subscription.Key("s")}},
		{keyEvent(2, subscription.SecretKey("s"), []byte("whsec_c2VjcmV0"), false), subPut(f, 2, sub),
			{Revision: 3, Type: "kv.put", Uri: subscription.SecretKey("s"), Payload: []byte("whsec_ZXZpbA==")}},
		{subPut(f, 2, sub), {Revision: 3, Type: "kv.delete", Hook: hivemindv1.Hook_HOOK_DELETE, Uri: "/nodes/host1/host"},
			{Revision: 4, Type: "member.failed", Uri: "/members/host1", Source: "host1", Payload: failed}},
		{keyEvent(2, subscription.Key("x/y"), b, false), keyEvent(3, subscription.Key("evil"), []byte{0xff}, false), keyEvent(4, subscription.Key("s"), b, false)},
		{{Revision: 2, Type: "intent.completed", Uri: "/deliver/s/x"}},
	} {
		raw, err := proto.Marshal(&hivemindv1.WatchResponse{Events: evs})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var resp hivemindv1.WatchResponse
		if proto.Unmarshal(raw, &resp) != nil {
			return
		}
		all, allCtx := offline(t)
		genuine, genuineCtx := offline(t)
		for _, ev := range resp.GetEvents() {
			all.apply(allCtx, ev)
			if ev.GetKv() != nil {
				genuine.apply(genuineCtx, ev)
			}
		}
		if all.subs.Len() != genuine.subs.Len() {
			t.Fatalf("subscriptions %v, from the events with a kv %v", all.subs.Names(), genuine.subs.Names())
		}
		for _, name := range all.subs.Names() {
			got, want := all.subs.Get(name), genuine.subs.Get(name)
			if want == nil || !proto.Equal(got.Sub, want.Sub) || got.CreateRevision != want.CreateRevision {
				t.Fatalf("subscription %s: %v, from the events with a kv %v", name, got, want)
			}
			if got.Sub.GetName() != name {
				t.Fatalf("subscription %q held under %q", got.Sub.GetName(), name)
			}
		}
		if len(all.secrets) != len(genuine.secrets) {
			t.Fatalf("%d secrets, %d from the events with a kv", len(all.secrets), len(genuine.secrets))
		}
		for name, s := range all.secrets {
			if genuine.secrets[name] != s {
				t.Fatalf("secret of %s changed by an event without a kv", name)
			}
		}
	})
}
