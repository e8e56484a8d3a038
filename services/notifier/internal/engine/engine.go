// Package engine turns committed events into deliveries, once per
// (subscription, event) across every notifier replica.
//
// Each replica watches the event log from its durable cursor
// (/nodes/<name>/notifier/cursor). For every event a subscription selects,
// it claims the intent /deliver/<subscription>/<event-id> on the control
// plane with a lease. The first committed claim wins: the winner runs the
// filter, delivers (through the target's channel: webhook or mail, retried with backoff, the lease
// renewed meanwhile), records the delivery under
// /notifier/deliveries/<subscription>/<delivery-id> and completes the
// intent with the outcome. A replica whose claim lost keeps the pair
// pending and claims again when the lease runs out, unless it sees the
// intent completed first; so a dead winner's work is taken over, with the
// same delivery id. The cursor moves past an event only once every
// delivery it owes is completed, by whichever replica.
//
// One goroutine (the loop) owns the state: the subscriptions, the pending
// pairs and the cursor. Claims and deliveries run on goroutines of their
// own, bounded by Config.Workers, and report back to the loop.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/backoff"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// ControlPlane is what the engine needs of the control plane
// (*cpclient.Client has it).
type ControlPlane interface {
	subscription.ControlPlane
	Watch(context.Context, *hivemindv1.WatchRequest, func(*hivemindv1.WatchResponse) error) error
	ClaimIntent(context.Context, *hivemindv1.ClaimIntentRequest) (*hivemindv1.ClaimIntentResponse, error)
	CompleteIntent(context.Context, *hivemindv1.CompleteIntentRequest) (*hivemindv1.CompleteIntentResponse, error)
	ReleaseIntent(context.Context, *hivemindv1.ReleaseIntentRequest) (*hivemindv1.ReleaseIntentResponse, error)
}

// Config configures an Engine. Zero values take the documented defaults.
type Config struct {
	// Name is the replica's node name: the intents' holder, and the owner
	// of the cursor key.
	Name         string
	ControlPlane ControlPlane
	// Channels deliver, chosen by each subscription's target; a target
	// whose channel is not Ready (mail without a relay) is dead-lettered.
	Channels *delivery.Channels
	Compiler *filter.Compiler
	// Lease is the length of a delivery claim; the holder renews it every
	// third of it. Default 30s.
	Lease time.Duration
	// Workers bounds concurrent claims and deliveries. Default 64.
	Workers int
	// CursorInterval is how often the cursor is written when it moved.
	// Default 1s.
	CursorInterval time.Duration
	Logger         *slog.Logger
}

// Engine delivers events. Build it with New and run it with Run.
type Engine struct {
	cfg    Config
	cp     ControlPlane
	store  *subscription.Store
	log    *slog.Logger
	loaded chan struct{}

	// Owned by the loop.
	subs    *subscription.Index
	secrets map[string]string // subscription → its separately stored secret
	pairs   map[string]*pair
	revs    []*revision // revisions with pairs outstanding, in order

	snapshotRev int64 // the revision the loaded subscriptions reflect

	results chan result
	sem     chan struct{}
	wg      sync.WaitGroup

	runCtx   context.Context
	batchMu  sync.Mutex
	batchers map[time.Duration]*delivery.Batcher[*batchItem]
}

// New returns an engine; Run starts it.
func New(cfg Config) (*Engine, error) {
	if cfg.Name == "" || cfg.ControlPlane == nil || cfg.Channels == nil || cfg.Compiler == nil {
		return nil, errors.New("engine: Name, ControlPlane, Channels and Compiler are required")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 30 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 64
	}
	if cfg.CursorInterval <= 0 {
		cfg.CursorInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Engine{
		cfg: cfg, cp: cfg.ControlPlane, store: subscription.NewStore(cfg.ControlPlane), log: cfg.Logger,
		loaded:   make(chan struct{}),
		subs:     subscription.NewIndex(),
		secrets:  map[string]string{},
		pairs:    map[string]*pair{},
		results:  make(chan result, 256),
		sem:      make(chan struct{}, cfg.Workers),
		batchers: map[time.Duration]*delivery.Batcher[*batchItem]{},
	}, nil
}

// CursorKey is where replica name keeps its cursor: the last revision
// whose deliveries are all completed.
func CursorKey(name string) string { return "/nodes/" + name + "/notifier/cursor" }

// IntentKey is the intent that guards the delivery of an event to a
// subscription.
func IntentKey(sub, eventID string) string { return "/deliver/" + sub + "/" + eventID }

// Loaded is closed once the cursor and the subscriptions are loaded and
// the engine watches the log.
func (e *Engine) Loaded() <-chan struct{} { return e.loaded }

// Store is the engine's subscription store.
func (e *Engine) Store() *subscription.Store { return e.store }

// pair is one (subscription, event) the engine owes a delivery for.
type pair struct {
	key string
	sub *subscription.Compiled
	ev  delivery.Event
	rev *revision
	// running while a claim or delivery goroutine has it; otherwise it
	// waits until retryAt.
	running bool
	retryAt time.Time
}

type revision struct {
	rev         int64
	outstanding int
	external    bool // has an event that is not the notifier's own
}

// result is what a claim/delivery goroutine reports for a pair.
type result struct {
	key  string
	done bool // completed, by anyone, or nothing to deliver
	// retryAt, when not done: claim again then.
	retryAt time.Time
}

// Run loads the cursor and the subscriptions, then delivers until ctx
// ends. Deliveries in progress are interrupted and their claims released
// so another replica takes them over at once.
//
// Run is called once per Engine; a Supervisor starts a fresh one after an
// error.
func (e *Engine) Run(ctx context.Context) error {
	// Deliveries in flight must not outlive a loop that stopped with an
	// error: they would go on retrying for a replica that no longer
	// listens to their results.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cursor, err := e.load(ctx)
	if err != nil {
		return err
	}
	e.runCtx = ctx
	events := make(chan *hivemindv1.WatchResponse, 64)
	watchDone := make(chan error, 1)
	go func() { watchDone <- e.watch(ctx, cursor+1, events) }()
	close(e.loaded)
	e.log.Info("notifier engine started", "cursor", cursor, "subscriptions", e.subs.Len(), "lease", e.cfg.Lease)

	err = e.loop(ctx, cursor, events, watchDone)
	cancel()
	e.closeBatchers()
	// Every goroutine releases what it holds on the way out.
	e.wg.Wait()
	return err
}

// load reads the cursor and the subscriptions. A new replica starts from
// now, not from history, and writes that down at once: an engine started
// again (after an error, a crash or a new control-plane client) must
// resume from where the first one began, not from its own now, or the
// events in between would be skipped.
func (e *Engine) load(ctx context.Context) (int64, error) {
	var cursor int64
	for {
		resp, err := e.cp.Get(ctx, &hivemindv1.GetRequest{Key: CursorKey(e.cfg.Name)})
		if err == nil && resp.GetFound() {
			cursor, err = strconv.ParseInt(string(resp.GetKv().GetValue()), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cursor %s: %w", CursorKey(e.cfg.Name), err)
			}
			break
		}
		if err == nil {
			cursor = resp.GetHeader().GetRevision()
			key := CursorKey(e.cfg.Name)
			_, err = e.cp.Txn(ctx, &hivemindv1.TxnRequest{
				Compares: []*hivemindv1.Compare{{Key: key, Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: 0}},
				Success:  []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: key, Value: []byte(strconv.FormatInt(cursor, 10))}}}},
			})
			if err == nil {
				continue // read it back: a lost race leaves the other's value
			}
		}
		e.log.Warn("cannot read the cursor yet", "err", err)
		if err := backoff.Sleep(ctx, time.Second); err != nil {
			return 0, err
		}
	}
	// Records from before secrets were kept apart: move their secrets out,
	// so that reading the records no longer shows them. Best effort; they
	// load either way.
	if n, err := e.store.MoveInlineSecrets(ctx); err != nil {
		e.log.Warn("cannot move inline subscription secrets to /notifier/secrets/ yet", "err", err)
	} else if n > 0 {
		e.log.Info("moved inline subscription secrets to /notifier/secrets/", "subscriptions", n)
	}
	for {
		subs, kvs, rev, err := e.store.List(ctx)
		if err == nil {
			for i, s := range subs {
				e.subs.Set(s.GetName(), subscription.Compile(s, kvs[i].GetCreateRevision(), e.cfg.Compiler))
				if s.GetSecret() != "" {
					// A later rewrite of the record (Disable) leaves the
					// secret out; it is kept from here.
					e.secrets[s.GetName()] = s.GetSecret()
				}
			}
			e.snapshotRev = rev
			return cursor, nil
		}
		e.log.Warn("cannot list subscriptions yet", "err", err)
		if err := backoff.Sleep(ctx, time.Second); err != nil {
			return 0, err
		}
	}
}

// watch feeds the log to the loop from start on. History that was
// compacted away is skipped with an error in the log: those events can no
// longer be delivered by anyone.
func (e *Engine) watch(ctx context.Context, start int64, out chan<- *hivemindv1.WatchResponse) error {
	for {
		var last int64
		err := e.cp.Watch(ctx, &hivemindv1.WatchRequest{StartRevision: start}, func(r *hivemindv1.WatchResponse) error {
			if n := len(r.GetEvents()); n > 0 {
				last = r.GetEvents()[n-1].GetRevision()
			}
			select {
			case out <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if status.Code(err) != codes.OutOfRange {
			return err
		}
		resp, gerr := e.cp.Get(ctx, &hivemindv1.GetRequest{Key: CursorKey(e.cfg.Name)})
		if gerr != nil {
			e.log.Warn("watch history is gone and the revision cannot be read", "err", gerr)
			if err := backoff.Sleep(ctx, time.Second); err != nil {
				return err
			}
			continue
		}
		e.log.Error("events were compacted before this notifier saw them; they are not delivered", "from", max(start, last+1), "to", resp.GetHeader().GetRevision(), "err", err)
		start = resp.GetHeader().GetRevision() + 1
	}
}
