package processor

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// recorder is a processor that records the versions it was given, fails
// while fail is set, and blocks while gate is held.
type recorder struct {
	mu       sync.Mutex
	versions []uint64
	fail     bool
	gate     sync.Mutex
	entered  chan uint64 // told of each Update before it takes gate
	updated  chan uint64
}

func (r *recorder) Update(_ context.Context, snap *hoststate.Snapshot) error {
	if r.entered != nil {
		r.entered <- snap.Version
	}
	r.gate.Lock()
	defer r.gate.Unlock()
	r.mu.Lock()
	fail := r.fail
	if !fail {
		r.versions = append(r.versions, snap.Version)
	}
	r.mu.Unlock()
	if fail {
		return errors.New("disk full")
	}
	r.updated <- snap.Version
	return nil
}

func put(t *testing.T, s *hoststate.State, seq uint64) {
	t.Helper()
	if _, err := s.Apply(hoststate.Update{Op: hoststate.Put, Host: "a", Seq: seq, Record: &hoststate.Host{
		Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(seq)})},
	}}); err != nil {
		t.Fatal(err)
	}
}

// waitVersion waits, with a deadline, until the processor has served v.
func waitVersion(t *testing.T, r *recorder, v uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-r.updated:
			if got == v {
				return
			}
			if got > v {
				t.Fatalf("served %d, waiting for %d", got, v)
			}
		case <-deadline:
			t.Fatalf("version %d never served", v)
		}
	}
}

func start(t *testing.T, s *hoststate.State, p Processor, opts Options) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- Run(ctx, s, p, opts) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
}

func TestRunServesEverySnapshotOrTheLatest(t *testing.T) {
	s := hoststate.New()
	put(t, s, 1)
	r := &recorder{updated: make(chan uint64, 100), entered: make(chan uint64, 100)}
	first := s.Snapshot().Version
	start(t, s, r, Options{})
	waitVersion(t, r, first)
	<-r.entered

	// While the processor is busy with one snapshot, two more are
	// published: it is given the last one next, not each in turn.
	r.gate.Lock()
	put(t, s, 2)
	busy := <-r.entered
	put(t, s, 3)
	put(t, s, 4)
	last := s.Snapshot().Version
	r.gate.Unlock()
	waitVersion(t, r, last)

	r.mu.Lock()
	defer r.mu.Unlock()
	if want := []uint64{first, busy, last}; !slices.Equal(r.versions, want) {
		t.Errorf("given versions %v, want %v", r.versions, want)
	}
}

func TestRunRetriesAFailedUpdate(t *testing.T) {
	s := hoststate.New()
	put(t, s, 1)
	r := &recorder{updated: make(chan uint64, 100), fail: true}
	errs := make(chan error, 100)
	start(t, s, r, Options{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, OnError: func(err error) { errs <- err }})
	select {
	case <-errs:
	case <-time.After(10 * time.Second):
		t.Fatal("failure never reported")
	}
	r.mu.Lock()
	r.fail = false
	r.mu.Unlock()
	// No new snapshot: the retry alone must get the current one served.
	waitVersion(t, r, s.Snapshot().Version)
}
