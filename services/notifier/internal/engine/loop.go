package engine

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/hivemind/hivemind/pkg/fsmevent"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// loop owns the engine's state until ctx ends.
func (e *Engine) loop(ctx context.Context, cursor int64, events <-chan *hivemindv1.WatchResponse, watchDone <-chan error) error {
	c := cursorState{processed: cursor, persisted: cursor}
	tick := time.NewTicker(min(e.cfg.Lease/8, 250*time.Millisecond))
	defer tick.Stop()
	persistTick := time.NewTicker(e.cfg.CursorInterval)
	defer persistTick.Stop()
	persisting := make(chan int64, 1)
	inFlight := false
	for {
		select {
		case <-ctx.Done():
			e.persist(context.Background(), &c, true, persisting)
			return nil
		case err := <-watchDone:
			if ctx.Err() != nil {
				return nil
			}
			// Keep what is done, so the engine started next resends less.
			e.persist(context.Background(), &c, true, persisting)
			return err
		case r := <-events:
			for _, ev := range r.GetEvents() {
				e.apply(ctx, ev)
			}
			if n := len(r.GetEvents()); n > 0 {
				c.processed = r.GetEvents()[n-1].GetRevision()
			}
		case res := <-e.results:
			e.finish(ctx, res)
		case <-tick.C:
			now := time.Now()
			for _, p := range e.pairs {
				if !p.running && !now.Before(p.retryAt) {
					e.start(ctx, p)
				}
			}
		case <-persistTick.C:
			if !inFlight {
				inFlight = e.persist(ctx, &c, false, persisting)
			}
		case v := <-persisting:
			inFlight = false
			if v > c.persisted {
				c.persisted = v
			}
		}
		e.advance(&c)
	}
}

// cursorState tracks what the cursor may say.
type cursorState struct {
	processed int64 // every event up to here has been looked at
	done      int64 // every delivery owed up to here is completed
	external  int64 // the last revision whose events were not only the notifier's own
	persisted int64
}

// advance drops fully completed revisions from the head of the queue.
func (e *Engine) advance(c *cursorState) {
	for len(e.revs) > 0 && e.revs[0].outstanding == 0 {
		if e.revs[0].external {
			c.external = max(c.external, e.revs[0].rev)
		}
		e.revs = e.revs[1:]
	}
	if len(e.revs) == 0 {
		c.done = c.processed
	} else {
		c.done = e.revs[0].rev - 1
	}
}

// persist writes the cursor if it moved past an event that mattered;
// moving past the notifier's own bookkeeping alone is not worth a write
// (each write is itself an event, and would be followed by another). The
// write runs on its own goroutine, which reports on done.
func (e *Engine) persist(ctx context.Context, c *cursorState, sync bool, done chan int64) bool {
	if c.external <= c.persisted || c.done < c.external {
		return false
	}
	v := c.done
	write := func(ctx context.Context) int64 {
		_, err := e.cp.Put(ctx, &hivemindv1.PutRequest{Key: CursorKey(e.cfg.Name), Value: []byte(strconv.FormatInt(v, 10))})
		if err != nil {
			e.log.Warn("cannot write the cursor", "cursor", v, "err", err)
			return 0
		}
		return v
	}
	if !sync {
		go func() { done <- write(ctx) }()
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	write(ctx)
	return false
}

// apply looks at one committed event: the notifier's own bookkeeping
// updates the state; any other event makes a pair for every subscription
// that selects it. Subscriptions and their secrets are taken only from the
// state machine's key events (package fsmevent): an event appended under
// /notifier/ looks like bookkeeping and changes nothing.
func (e *Engine) apply(ctx context.Context, pe *hivemindv1.Event) {
	uri := pe.GetUri()
	if subscription.Internal(uri) {
		switch {
		case pe.GetType() == "intent.completed":
			if p := e.pairs[uri]; p != nil && !p.running {
				e.done(p)
			}
		case strings.HasPrefix(uri, subscription.SubscriptionsPrefix), strings.HasPrefix(uri, subscription.SecretsPrefix):
			e.applySubscription(pe)
		}
		return
	}
	ev := delivery.FromProto(pe)
	var rv *revision
	if n := len(e.revs); n > 0 && e.revs[n-1].rev == ev.Revision {
		rv = e.revs[n-1]
	} else {
		rv = &revision{rev: ev.Revision}
		e.revs = append(e.revs, rv)
	}
	rv.external = true
	e.subs.Selecting(ev, func(name string, s *subscription.Compiled) {
		key := IntentKey(name, ev.ID)
		if e.pairs[key] != nil {
			return
		}
		p := &pair{key: key, sub: s, ev: ev, rev: rv}
		e.pairs[key] = p
		rv.outstanding++
		e.start(ctx, p)
	})
}

// applySubscription applies a change of a subscription's record or
// secret. Anything else under their prefixes is logged and skipped.
func (e *Engine) applySubscription(pe *hivemindv1.Event) {
	if pe.GetRevision() <= e.snapshotRev {
		return // the loaded list already reflects it
	}
	c, err := fsmevent.Key(pe)
	if err != nil {
		e.log.Warn("ignoring an event under the notifier's keys", "revision", pe.GetRevision(), "err", err)
		return
	}
	key := c.KV.GetKey()
	if name, ok := strings.CutPrefix(key, subscription.SecretsPrefix); ok {
		e.applySecret(name, c)
		return
	}
	name := strings.TrimPrefix(key, subscription.SubscriptionsPrefix)
	if err := subscription.ValidateName(name); err != nil {
		e.log.Warn("ignoring a subscription key that names no subscription", "key", key, "err", err)
		return
	}
	if c.Deleted {
		e.subs.Delete(name)
		return
	}
	sub, err := subscription.Unmarshal(c.KV.GetValue())
	if err != nil {
		e.log.Error("ignoring a subscription that cannot be decoded", "key", key, "err", err)
		return
	}
	if sub.GetName() != name {
		e.log.Error("ignoring a subscription stored under another name", "key", key, "name", sub.GetName())
		return
	}
	e.subs.Set(name, subscription.Compile(subscription.WithSecret(sub, e.secrets[name]), c.KV.GetCreateRevision(), e.cfg.Compiler))
}

// applySecret keeps a subscription's separately stored secret. The record
// and its secret change in one transaction, the secret first, so the
// record that follows finds it; a loaded subscription gets it too.
func (e *Engine) applySecret(name string, c fsmevent.KeyChange) {
	if c.Deleted {
		delete(e.secrets, name)
		return
	}
	secret := string(c.KV.GetValue())
	e.secrets[name] = secret
	if cs := e.subs.Get(name); cs != nil {
		// A copy: pairs in flight keep the subscription they started with.
		next := *cs
		next.Sub = subscription.WithSecret(cs.Sub, secret)
		e.subs.Set(name, &next)
	}
}

// finish takes a goroutine's report on a pair.
func (e *Engine) finish(ctx context.Context, r result) {
	p := e.pairs[r.key]
	if p == nil {
		return
	}
	p.running = false
	if r.done {
		e.done(p)
		return
	}
	p.retryAt = r.retryAt
}

func (e *Engine) done(p *pair) {
	delete(e.pairs, p.key)
	p.rev.outstanding--
}
