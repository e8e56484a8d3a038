package watch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// memLog is an in-memory event log for tests.
type memLog struct {
	mu     sync.Mutex
	events []*hivemindv1.Event
	rev    int64
	oldest int64
}

var errCompacted = errors.New("compacted")

func (l *memLog) EventsFrom(rev int64, max int) ([]*hivemindv1.Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rev < l.oldest {
		return nil, fmt.Errorf("%w; oldest retained is %d", errCompacted, l.oldest)
	}
	var out []*hivemindv1.Event
	for _, e := range l.events {
		if e.Revision >= rev && len(out) < max {
			out = append(out, e)
		}
	}
	return out, nil
}

func (l *memLog) Revision() int64 { l.mu.Lock(); defer l.mu.Unlock(); return l.rev }

// commit appends one revision with n events under uri.
func (l *memLog) commit(uri string, n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rev++
	for i := 0; i < n; i++ {
		l.events = append(l.events, &hivemindv1.Event{Revision: l.rev, Uri: uri, Type: "kv.put", Id: fmt.Sprint(l.rev, ".", i)})
	}
}

type recorder struct {
	mu    sync.Mutex
	resps []*hivemindv1.WatchResponse
	more  chan struct{}
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1000)} }

func (r *recorder) send(resp *hivemindv1.WatchResponse) error {
	r.mu.Lock()
	r.resps = append(r.resps, resp)
	r.mu.Unlock()
	r.more <- struct{}{}
	return nil
}

func (r *recorder) waitFor(t *testing.T, cond func([]*hivemindv1.WatchResponse) bool) []*hivemindv1.WatchResponse {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		got := append([]*hivemindv1.WatchResponse(nil), r.resps...)
		r.mu.Unlock()
		if cond(got) {
			return got
		}
		select {
		case <-r.more:
		case <-deadline:
			t.Fatalf("condition not met; got %v", got)
		}
	}
}

func events(resps []*hivemindv1.WatchResponse) []*hivemindv1.Event {
	var out []*hivemindv1.Event
	for _, r := range resps {
		out = append(out, r.Events...)
	}
	return out
}

func TestWatchOrderedWholeRevisionsFiltered(t *testing.T) {
	log := &memLog{}
	hub := New(log, Config{Batch: 4})
	log.commit("/a/1", 1)
	log.commit("/b/1", 1)
	log.commit("/a/2", 6) // larger than a batch: must still arrive whole

	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- hub.Serve(ctx, &hivemindv1.WatchRequest{StartRevision: 1, Prefix: "/a/"}, rec.send) }()

	rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(events(r)) == 7 })
	log.commit("/a/3", 2)
	hub.Notify()
	got := rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(events(r)) == 9 })

	wantRevs := []int64{1, 3, 4}
	if len(got) != len(wantRevs) {
		t.Fatalf("got %d responses, want one per matching revision %v", len(got), wantRevs)
	}
	for i, resp := range got {
		for _, e := range resp.Events {
			if e.Revision != wantRevs[i] {
				t.Errorf("response %d mixes revision %d into %d", i, e.Revision, wantRevs[i])
			}
			if e.Uri[:3] != "/a/" {
				t.Errorf("prefix filter let %s through", e.Uri)
			}
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve returned %v", err)
	}
}

func TestWatchFromNowAndProgress(t *testing.T) {
	log := &memLog{}
	log.commit("/x", 1)
	hub := New(log, Config{})
	rec := newRecorder()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go hub.Serve(ctx, &hivemindv1.WatchRequest{ProgressInterval: durationpb.New(20 * time.Millisecond), Types: []string{"kv.put"}}, rec.send)

	got := rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(r) >= 1 })
	if !got[0].Progress || got[0].Header.Revision != 1 {
		t.Fatalf("first response %v, want progress at revision 1", got[0])
	}
	// Idle: more progress notifications, never events from before the start.
	got = rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(r) >= 3 })
	if len(events(got)) != 0 {
		t.Fatalf("watch from now replayed history: %v", events(got))
	}
	log.commit("/y", 1)
	hub.Notify()
	got = rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(events(r)) == 1 })
	if e := events(got)[0]; e.Revision != 2 {
		t.Fatalf("got %v, want revision 2", e)
	}
}

func TestWatchCompactedAndLimit(t *testing.T) {
	log := &memLog{oldest: 5, rev: 9}
	hub := New(log, Config{MaxWatches: 1})
	err := hub.Serve(context.Background(), &hivemindv1.WatchRequest{StartRevision: 2}, newRecorder().send)
	if !errors.Is(err, errCompacted) {
		t.Fatalf("got %v, want the log's compacted error", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := newRecorder()
	go hub.Serve(ctx, &hivemindv1.WatchRequest{}, rec.send)
	rec.waitFor(t, func(r []*hivemindv1.WatchResponse) bool { return len(r) == 1 })
	if err := hub.Serve(ctx, &hivemindv1.WatchRequest{}, newRecorder().send); !errors.Is(err, ErrTooManyWatches) {
		t.Fatalf("second watch: %v, want ErrTooManyWatches", err)
	}
}
