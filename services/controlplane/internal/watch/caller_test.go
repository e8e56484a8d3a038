package watch

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

type callerKey struct{}

func as(ctx context.Context, caller string) context.Context {
	return context.WithValue(ctx, callerKey{}, caller)
}

func callerOf(ctx context.Context) (string, bool, bool) {
	name, ok := ctx.Value(callerKey{}).(string)
	return name, name == "admin", ok
}

// One caller holding as many watches as it may is refused another, naming
// the cap, while other callers (a dns processor bootstrapping, say) still
// watch and receive events; exempt callers and watches without a caller
// count only against the member's total; a caller that closes a watch may
// open one again.
func TestWatchesPerCaller(t *testing.T) {
	log := &memLog{oldest: 1}
	hub := New(log, Config{MaxWatches: 10, MaxWatchesPerCaller: 3, Caller: callerOf})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	open := func(ctx context.Context, caller string) *recorder {
		rec := newRecorder()
		go hub.Serve(as(ctx, caller), &hivemindv1.WatchRequest{}, rec.send)
		rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(r) == 1 })
		return rec
	}
	greedyCtx, closeOne := context.WithCancel(ctx)
	open(greedyCtx, "operator ro")
	open(ctx, "operator ro")
	open(ctx, "operator ro")

	err := hub.Serve(as(ctx, "operator ro"), &hivemindv1.WatchRequest{}, newRecorder().send)
	if !errors.Is(err, ErrTooManyWatches) || !strings.Contains(err.Error(), "operator ro already holds 3, the most one caller may hold") {
		t.Fatalf("a fourth watch of the same caller: %v", err)
	}

	dns := open(ctx, "node dns-1")
	open(ctx, "admin")
	open(ctx, "admin")
	open(ctx, "admin")
	open(ctx, "admin")
	log.commit("/nodes/h1/host", 1)
	hub.Notify()
	dns.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(events(r)) == 1 })
	if hub.Watches() != 8 {
		t.Fatalf("%d watches open, want 8", hub.Watches())
	}

	closeOne()
	waitWatches(t, hub, 7)
	open(ctx, "operator ro")
}

// The member's total still bounds everyone.
func TestWatchesTotalBoundsEveryCaller(t *testing.T) {
	hub := New(&memLog{oldest: 1}, Config{MaxWatches: 2, MaxWatchesPerCaller: 5, Caller: callerOf})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, c := range []string{"a", "b"} {
		rec := newRecorder()
		go hub.Serve(as(ctx, c), &hivemindv1.WatchRequest{}, rec.send)
		rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(r) == 1 })
	}
	err := hub.Serve(as(ctx, "admin"), &hivemindv1.WatchRequest{}, newRecorder().send)
	if !errors.Is(err, ErrTooManyWatches) || !strings.Contains(err.Error(), "2 already open on this member") {
		t.Fatalf("a watch beyond the member's total: %v", err)
	}
}

func waitWatches(t *testing.T, hub *Hub, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for hub.Watches() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d watches open, want %d", hub.Watches(), n)
		}
		<-tick.C
	}
}
