// Package hostpublish is the one door through which the host agent's records
// leave the machine. Each record gets the host's next sequence number and
// an HLC timestamp here, then goes two ways (DESIGN.md §1):
//
//   - durable: a Put of /nodes/<node>/host to the control plane, stamped
//     with the record's HLC so a late retry never overwrites a newer value.
//     Only the newest record is ever written: while the control plane is
//     unavailable the writer retries with backoff, and a record that was
//     replaced in the meantime is never sent. When writes succeed again
//     after failing, the writer re-asserts everything the agent owns (the
//     record with a fresh sequence number and timestamp, every published
//     /app/ entry): for its own part, the agent's view wins. A Put the
//     control plane refuses as older than the stored record (a previous
//     run's clock was ahead) moves the clock past the stored timestamp and
//     writes again, for the same reason.
//   - fast: a PushHosts stream to each of up to MaxSinks dns processors
//     from the gossip view; each stream gets the newest record when it
//     opens and every newer one after. A stream that fails is closed and
//     its processor rested for a while, so the slot rotates to another.
//
// Published configuration (/app/<key>) takes the durable way only, and
// only what changed is written.
package hostpublish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/backoff"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
)

// Store is the part of the control-plane client the publisher writes with.
type Store interface {
	Put(ctx context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error)
	Delete(ctx context.Context, req *hivemindv1.DeleteRequest) (*hivemindv1.DeleteResponse, error)
}

// Sequence hands out the host's sequence numbers (internal/seq).
type Sequence interface {
	Next() (uint64, error)
}

// Sink is an open PushHosts stream to one dns processor.
type Sink interface {
	Send(*hivemindv1.HostRecord) error
	// Close ends the stream; it must not block for long.
	Close() error
}

// OpenSink opens a stream to the dns processor at a gRPC address.
type OpenSink func(ctx context.Context, addr string) (Sink, error)

// Defaults.
const (
	DefaultMaxSinks     = 2
	DefaultBackoffBase  = 100 * time.Millisecond
	DefaultBackoffMax   = 5 * time.Second
	DefaultRescan       = time.Second
	DefaultWriteTimeout = 5 * time.Second
)

// Options configure a Publisher. Zero durations take the defaults.
type Options struct {
	Node string
	// Store is the control plane, nil while the node has not joined.
	Store func() Store
	Seq   Sequence
	Clock *hlc.Clock
	// Targets lists the gRPC addresses of the dns processors in view.
	Targets func() []string
	Open    OpenSink
	// MaxSinks is how many dns processors get the fast path (<= 0: 2).
	MaxSinks int
	// BackoffBase doubles per failed write up to BackoffMax.
	BackoffBase, BackoffMax time.Duration
	// Rescan is how often a slot without a processor looks again, and how
	// often a stream checks that its processor is still in view; a
	// failed processor rests twice as long.
	Rescan time.Duration
	// WriteTimeout bounds one control-plane call.
	WriteTimeout time.Duration
	Logger       *slog.Logger
}

// ErrStopped is returned by Publish once Stop has begun: after the gone
// record, nothing else may be published.
var ErrStopped = errors.New("publish: stopping")

// Publisher publishes the host's records. Its methods are safe for
// concurrent use.
type Publisher struct {
	o   Options
	log *slog.Logger

	mu          sync.Mutex
	latest      *hivemindv1.HostRecord
	apps        map[string]string
	written     uint64            // seq of the newest record the control plane has
	writtenApps map[string]string // /app/ entries the control plane has from us
	reassert    bool
	stopping    bool
	sent        []uint64       // per slot: seq of the last record sent
	busy        map[string]int // address → slot streaming to it
	resting     map[string]time.Time
	progress    chan struct{} // closed and replaced on every change
	kickWrite   chan struct{}
	kickSinks   []chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a publisher; Start runs it.
func New(o Options) *Publisher {
	if o.MaxSinks <= 0 {
		o.MaxSinks = DefaultMaxSinks
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.Rescan <= 0 {
		o.Rescan = DefaultRescan
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Targets == nil {
		o.Targets = func() []string { return nil }
	}
	p := &Publisher{
		o: o, log: o.Logger,
		apps: map[string]string{}, writtenApps: map[string]string{},
		reassert: true, // a new run asserts its whole part once
		sent:     make([]uint64, o.MaxSinks),
		busy:     map[string]int{}, resting: map[string]time.Time{},
		progress: make(chan struct{}), kickWrite: make(chan struct{}, 1),
	}
	for range o.MaxSinks {
		p.kickSinks = append(p.kickSinks, make(chan struct{}, 1))
	}
	return p
}

// Start runs the durable writer and the fast-path slots until Stop; ctx
// carries values only: the loops outlive its cancellation, so that Stop
// can still publish the gone record after a SIGTERM cancelled the rest.
func (p *Publisher) Start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(context.WithoutCancel(ctx))
	p.wg.Add(1)
	go p.writeLoop(ctx)
	if p.o.Open != nil {
		for i := range p.o.MaxSinks {
			p.wg.Add(1)
			go p.slotLoop(ctx, i)
		}
	}
}

// Publish stamps rec (a copy of it) with the next sequence number and HLC
// timestamp, makes it the newest record and sends it both ways. It returns
// the stamped record.
func (p *Publisher) Publish(rec *hivemindv1.HostRecord) (*hivemindv1.HostRecord, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return nil, ErrStopped
	}
	return p.stampLocked(rec)
}

func (p *Publisher) stampLocked(rec *hivemindv1.HostRecord) (*hivemindv1.HostRecord, error) {
	seq, err := p.o.Seq.Next()
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	r := proto.CloneOf(rec)
	r.Node, r.Seq, r.Hlc = p.o.Node, seq, uint64(p.o.Clock.Now())
	p.latest = r
	p.changedLocked()
	p.kick(p.kickWrite)
	for _, k := range p.kickSinks {
		p.kick(k)
	}
	return proto.CloneOf(r), nil
}

// SetApps makes apps (key → value) the configuration entries published
// under /app/; entries no longer in it are deleted.
func (p *Publisher) SetApps(apps map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if maps.Equal(apps, p.apps) {
		return
	}
	p.apps = maps.Clone(apps)
	if p.apps == nil {
		p.apps = map[string]string{}
	}
	p.kick(p.kickWrite)
}

// Latest is the newest record (nil before the first Publish).
func (p *Publisher) Latest() *hivemindv1.HostRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.latest == nil {
		return nil
	}
	return proto.CloneOf(p.latest)
}

// Written is the sequence number of the newest record the control plane
// acknowledged.
func (p *Publisher) Written() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written
}

// Stop publishes the record once more with gone set, waits until the
// control plane has it and the open streams have sent it (or ctx ends),
// and stops. Call it before the node leaves the cluster.
func (p *Publisher) Stop(ctx context.Context) error {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return nil
	}
	p.stopping = true
	var gone *hivemindv1.HostRecord
	var err error
	if p.latest != nil {
		r := proto.CloneOf(p.latest)
		r.Gone = true
		gone, err = p.stampLocked(r)
	}
	p.mu.Unlock()
	// A node that never joined has no control plane to tell.
	joined := p.o.Store != nil && p.o.Store() != nil
	if gone != nil {
		err = errors.Join(err, p.waitFor(ctx, func() bool {
			if joined && p.written < gone.Seq {
				return false
			}
			for slot, s := range p.sent {
				if s < gone.Seq && p.streaming(slot) {
					return false
				}
			}
			return true
		}))
		if err != nil {
			err = fmt.Errorf("publish: gone record %d not published everywhere: %w", gone.Seq, err)
		}
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	return err
}

// streaming reports whether slot has an open stream; p.mu is held.
func (p *Publisher) streaming(slot int) bool {
	for _, s := range p.busy {
		if s == slot {
			return true
		}
	}
	return false
}

// waitFor waits until cond (called with p.mu held) holds or ctx ends.
func (p *Publisher) waitFor(ctx context.Context, cond func() bool) error {
	for {
		p.mu.Lock()
		ok, ch := cond(), p.progress
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// changedLocked wakes waitFor; p.mu is held.
func (p *Publisher) changedLocked() {
	close(p.progress)
	p.progress = make(chan struct{})
}

func (p *Publisher) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// errNotJoined is a write attempted before the node joined.
var errNotJoined = errors.New("not joined to the cluster yet")

// writeLoop brings the control plane up to date whenever something
// changes, retrying with backoff while it fails.
func (p *Publisher) writeLoop(ctx context.Context) {
	defer p.wg.Done()
	failures, outage := 0, false
	for {
		err := p.sync(ctx)
		if ctx.Err() != nil {
			return
		}
		var wait <-chan time.Time
		if err != nil {
			if !outage && !errors.Is(err, errNotJoined) {
				p.log.Warn("control plane write failed; retrying with backoff, newest record only", "err", err)
				outage = true
			}
			failures++
			d := backoff.Equal(p.o.BackoffBase, p.o.BackoffMax, failures-1)
			if !outage { // not joined yet: the first write should follow the join closely
				d = backoff.Equal(2*p.o.BackoffBase, 2*p.o.BackoffBase, 0)
			}
			t := time.NewTimer(d)
			wait = t.C
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-wait:
			}
			continue
		}
		if outage {
			p.log.Info("control plane writes succeed again; re-asserted this host's part", "failed_attempts", failures)
		}
		failures, outage = 0, false
		select {
		case <-ctx.Done():
			return
		case <-p.kickWrite:
		}
	}
}

// sync writes what the control plane lacks: the newest record, and the
// /app/ entries that changed (everything when re-asserting). Any failure
// makes the next success a re-assertion.
func (p *Publisher) sync(ctx context.Context) error {
	err := p.syncOnce(ctx)
	if err != nil {
		p.mu.Lock()
		p.reassert = true
		p.mu.Unlock()
	}
	return err
}

func (p *Publisher) syncOnce(ctx context.Context) error {
	var st Store
	if p.o.Store != nil {
		st = p.o.Store()
	}
	if st == nil {
		return errNotJoined
	}
	p.mu.Lock()
	full := p.reassert
	p.mu.Unlock()
	if err := p.writeRecord(ctx, st, full); err != nil {
		return err
	}
	if err := p.writeApps(ctx, st, full); err != nil {
		return err
	}
	p.mu.Lock()
	p.reassert = false
	p.mu.Unlock()
	return nil
}

// writeRecord puts the newest record if the control plane lacks it, or,
// when re-asserting, a fresh stamp of it.
func (p *Publisher) writeRecord(ctx context.Context, st Store, full bool) error {
	restamp := false
	for attempt := 0; ; attempt++ {
		p.mu.Lock()
		rec := p.latest
		if rec != nil && (restamp || full && rec.Seq <= p.written) {
			var err error
			if rec, err = p.stampLocked(rec); err != nil {
				p.mu.Unlock()
				return err
			}
		}
		written := p.written
		p.mu.Unlock()
		if rec == nil || rec.Seq <= written {
			return nil
		}
		value, err := Marshal(rec)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		cctx, cancel := context.WithTimeout(ctx, p.o.WriteTimeout)
		resp, err := st.Put(cctx, &hivemindv1.PutRequest{Key: Key(p.o.Node), Value: value, Hlc: rec.Hlc})
		cancel()
		if err != nil {
			return fmt.Errorf("put %s: %w", Key(p.o.Node), err)
		}
		if resp.GetApplied() {
			p.mu.Lock()
			if rec.Seq > p.written {
				p.written = rec.Seq
				p.changedLocked()
			}
			p.mu.Unlock()
			// A newer record may have come while this one was written:
			// go round again for it.
			full, restamp = false, false
			continue
		}
		// The stored record is newer by its timestamp: a previous run's
		// clock was ahead. Move past it and write again.
		stored := resp.GetKv().GetHlc()
		if _, err := p.o.Clock.Update(hlc.Timestamp(stored)); err != nil {
			return fmt.Errorf("put %s: the stored record's timestamp is ahead of this clock: %w", Key(p.o.Node), err)
		}
		if attempt >= 3 {
			return fmt.Errorf("put %s: still not applied after %d attempts (stored hlc %d)", Key(p.o.Node), attempt+1, stored)
		}
		restamp = true
	}
}

// writeApps brings /app/ up to date with the published entries.
func (p *Publisher) writeApps(ctx context.Context, st Store, full bool) error {
	p.mu.Lock()
	want, have := maps.Clone(p.apps), maps.Clone(p.writtenApps)
	p.mu.Unlock()
	for _, k := range sortedKeys(want) {
		v := want[k]
		if old, ok := have[k]; ok && old == v && !full {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, p.o.WriteTimeout)
		_, err := st.Put(cctx, &hivemindv1.PutRequest{Key: AppPath(k), Value: []byte(v)})
		cancel()
		if err != nil {
			return fmt.Errorf("put %s: %w", AppPath(k), err)
		}
		p.mu.Lock()
		p.writtenApps[k] = v
		p.mu.Unlock()
	}
	for _, k := range sortedKeys(have) {
		if _, ok := want[k]; ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, p.o.WriteTimeout)
		_, err := st.Delete(cctx, &hivemindv1.DeleteRequest{Key: AppPath(k)})
		cancel()
		if err != nil {
			return fmt.Errorf("delete %s: %w", AppPath(k), err)
		}
		p.mu.Lock()
		delete(p.writtenApps, k)
		p.mu.Unlock()
	}
	return nil
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
