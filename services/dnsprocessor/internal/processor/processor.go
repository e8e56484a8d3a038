// Package processor is how the host state reaches what serves it. A
// Processor is given every new snapshot of the state; the DNS handler is
// one, the hosts file writer another. Each runs on its own goroutine, so a
// slow one (a disk) never holds up a fast one (DNS) or the state's writers.
package processor

import (
	"context"
	"time"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// Processor consumes snapshots of the host state.
type Processor interface {
	// Update makes the processor serve snap. Snapshots come in order, but
	// one that was superseded while Update ran is skipped: a processor
	// must treat each as the whole state, not as a change to the last.
	Update(ctx context.Context, snap *hoststate.Snapshot) error
}

// Source publishes snapshots; *hoststate.State is one.
type Source interface {
	// Watch returns the current snapshot and a channel closed when a newer
	// one is published.
	Watch() (*hoststate.Snapshot, <-chan struct{})
}

// Options tune Run. The zero value is usable.
type Options struct {
	// OnError is told of every failed Update (default: nothing).
	OnError func(err error)
	// MinBackoff and MaxBackoff bound the wait before a failed Update is
	// tried again, doubling in between (defaults 100ms and 10s). A newer
	// snapshot is tried at once.
	MinBackoff, MaxBackoff time.Duration
}

// Run gives p the current snapshot of src and every newer one until ctx
// ends, and returns ctx's error. Start it once the state is bootstrapped:
// an empty state before that is not something to serve.
func Run(ctx context.Context, src Source, p Processor, opts Options) error {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(10*time.Second, opts.MinBackoff)
	}
	var (
		done    uint64 // version p has served
		served  bool
		backoff = opts.MinBackoff
	)
	for {
		snap, changed := src.Watch()
		if !served || snap.Version != done {
			if err := p.Update(ctx, snap); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if opts.OnError != nil {
					opts.OnError(err)
				}
				t := time.NewTimer(backoff)
				backoff = min(2*backoff, opts.MaxBackoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-changed:
				case <-t.C:
				}
				t.Stop()
				continue
			}
			done, served, backoff = snap.Version, true, opts.MinBackoff
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
