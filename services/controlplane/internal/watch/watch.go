// Package watch streams the committed event log to watchers.
//
// Watchers do not get their own copies of events pushed into buffers;
// instead each one pulls from the retained log at its own pace and sleeps on
// a broadcast that fires whenever a revision is applied. A slow watcher
// therefore never holds back the others or the apply loop, and the order,
// gap-freedom and whole-revision guarantees come straight from the log:
// the watcher sends revisions strictly in order, each revision's events in
// one response.
package watch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Log is the read side of the event log that watchers pull from.
type Log interface {
	// EventsFrom returns retained events with revision >= rev, in order, at
	// most max of them (possibly ending in the middle of a revision). It
	// fails with an error wrapping ErrCompacted-like information when rev
	// is older than the oldest retained revision.
	EventsFrom(rev int64, max int) ([]*hivemindv1.Event, error)
	// Revision is the latest applied revision.
	Revision() int64
}

// ErrTooManyWatches is returned when the hub already serves MaxWatches,
// or the caller already holds MaxWatchesPerCaller.
var ErrTooManyWatches = errors.New("too many watches")

// Config configures a Hub.
type Config struct {
	// MaxWatches bounds concurrent watches. Default 10,000.
	MaxWatches int
	// MaxWatchesPerCaller bounds the concurrent watches of one caller, so
	// that one client cannot take every watch and starve the others.
	// Default 1,000.
	MaxWatchesPerCaller int
	// Caller names the caller of a watch from its context, and says
	// whether it is exempt from MaxWatchesPerCaller. ok false (no
	// identity) counts the watch against MaxWatches only. Default: no
	// caller is known.
	Caller func(ctx context.Context) (key string, exempt, ok bool)
	// Batch is how many events one pull reads at most. Default 1,000.
	Batch int
	// DefaultProgress is the idle time before a progress notification when
	// the request sets none. Default 5s.
	DefaultProgress time.Duration
	// Header fills the header of each response (term, node, epoch).
	Header func(rev int64) *hivemindv1.ResponseHeader
}

// Hub wakes watchers when revisions are applied.
type Hub struct {
	cfg Config
	log Log

	mu      sync.Mutex
	applied chan struct{} // closed and replaced on every Notify
	watches int
	// perCaller counts the open watches of each caller not exempt; a
	// caller without watches has no entry.
	perCaller map[string]int
}

// New returns a hub over log.
func New(log Log, cfg Config) *Hub {
	if cfg.MaxWatches == 0 {
		cfg.MaxWatches = 10_000
	}
	if cfg.MaxWatchesPerCaller == 0 {
		cfg.MaxWatchesPerCaller = 1000
	}
	if cfg.Caller == nil {
		cfg.Caller = func(context.Context) (string, bool, bool) { return "", false, false }
	}
	if cfg.Batch == 0 {
		cfg.Batch = 1000
	}
	if cfg.DefaultProgress == 0 {
		cfg.DefaultProgress = 5 * time.Second
	}
	if cfg.Header == nil {
		cfg.Header = func(rev int64) *hivemindv1.ResponseHeader { return &hivemindv1.ResponseHeader{Revision: rev} }
	}
	return &Hub{cfg: cfg, log: log, applied: make(chan struct{}), perCaller: map[string]int{}}
}

// Notify wakes every watcher; call it after each applied revision.
func (h *Hub) Notify() {
	h.mu.Lock()
	close(h.applied)
	h.applied = make(chan struct{})
	h.mu.Unlock()
}

func (h *Hub) wait() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.applied
}

// Watches is the number of watches being served.
func (h *Hub) Watches() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.watches
}

// admit counts a new watch against the hub's and its caller's limits, and
// returns the function that gives it back.
func (h *Hub) admit(ctx context.Context) (release func(), err error) {
	key, exempt, ok := h.cfg.Caller(ctx)
	counted := ok && !exempt
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watches >= h.cfg.MaxWatches {
		return nil, fmt.Errorf("%w: %d already open on this member, its limit", ErrTooManyWatches, h.cfg.MaxWatches)
	}
	if counted && h.perCaller[key] >= h.cfg.MaxWatchesPerCaller {
		return nil, fmt.Errorf("%w: %s already holds %d, the most one caller may hold on this member", ErrTooManyWatches, key, h.cfg.MaxWatchesPerCaller)
	}
	h.watches++
	if counted {
		h.perCaller[key]++
	}
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.watches--
		if counted {
			if h.perCaller[key]--; h.perCaller[key] == 0 {
				delete(h.perCaller, key)
			}
		}
	}, nil
}

// Serve runs one watch until ctx ends or send fails. A request whose start
// revision is 0 starts after the current revision, and first gets a
// progress response saying which revision that is.
func (h *Hub) Serve(ctx context.Context, req *hivemindv1.WatchRequest, send func(*hivemindv1.WatchResponse) error) error {
	release, err := h.admit(ctx)
	if err != nil {
		return err
	}
	defer release()

	progress := h.cfg.DefaultProgress
	if d := req.GetProgressInterval().AsDuration(); d > 0 {
		progress = d
	}
	match := matcher(req)

	next := req.GetStartRevision()
	if next == 0 {
		rev := h.log.Revision()
		next = rev + 1
		if err := send(&hivemindv1.WatchResponse{Header: h.cfg.Header(rev), Progress: true}); err != nil {
			return err
		}
	}
	idle := time.NewTimer(progress)
	defer idle.Stop()
	for {
		// Take the wake-up channel before reading, so a revision applied
		// between the read and the wait is not missed.
		woken := h.wait()
		batch, err := h.log.EventsFrom(next, h.cfg.Batch)
		if err != nil {
			return err
		}
		if batch, err = wholeRevisions(batch, h.cfg.Batch, h.log, next); err != nil {
			return err
		}
		if len(batch) > 0 {
			sent := false
			for _, rev := range byRevision(batch) {
				evs := filter(rev, match)
				if len(evs) == 0 {
					continue
				}
				if err := send(&hivemindv1.WatchResponse{Header: h.cfg.Header(rev[0].GetRevision()), Events: evs}); err != nil {
					return err
				}
				sent = true
			}
			next = batch[len(batch)-1].GetRevision() + 1
			if sent {
				idle.Reset(progress)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-woken:
		case <-idle.C:
			// Everything before next has been sent (or filtered out).
			if err := send(&hivemindv1.WatchResponse{Header: h.cfg.Header(next - 1), Progress: true}); err != nil {
				return err
			}
			idle.Reset(progress)
		}
	}
}

// wholeRevisions makes sure a batch never ends in the middle of a revision:
// a batch cut by the size limit drops its last, possibly partial, revision;
// if that was the only one, the whole revision is read with a larger limit.
func wholeRevisions(batch []*hivemindv1.Event, limit int, log Log, from int64) ([]*hivemindv1.Event, error) {
	if len(batch) < limit {
		return batch, nil
	}
	last := batch[len(batch)-1].GetRevision()
	cut := len(batch)
	for cut > 0 && batch[cut-1].GetRevision() == last {
		cut--
	}
	if cut > 0 {
		return batch[:cut], nil
	}
	for size := limit * 2; ; size *= 2 {
		more, err := log.EventsFrom(from, size)
		if err != nil {
			return nil, err
		}
		n := 0
		for n < len(more) && more[n].GetRevision() == last {
			n++
		}
		if n < len(more) || len(more) < size {
			return more[:n], nil
		}
	}
}

func byRevision(events []*hivemindv1.Event) [][]*hivemindv1.Event {
	var out [][]*hivemindv1.Event
	start := 0
	for i := 1; i <= len(events); i++ {
		if i == len(events) || events[i].GetRevision() != events[start].GetRevision() {
			out = append(out, events[start:i])
			start = i
		}
	}
	return out
}

func matcher(req *hivemindv1.WatchRequest) func(*hivemindv1.Event) bool {
	prefix := req.GetPrefix()
	types := map[string]bool{}
	for _, t := range req.GetTypes() {
		types[t] = true
	}
	return func(e *hivemindv1.Event) bool {
		if !strings.HasPrefix(e.GetUri(), prefix) {
			return false
		}
		return len(types) == 0 || types[e.GetType()]
	}
}

func filter(events []*hivemindv1.Event, match func(*hivemindv1.Event) bool) []*hivemindv1.Event {
	var out []*hivemindv1.Event
	for _, e := range events {
		if match(e) {
			out = append(out, e)
		}
	}
	return out
}
