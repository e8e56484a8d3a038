package engine

import (
	"context"
	"slices"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// batchItem is a claimed delivery waiting for its subscription's
// batching window to close.
type batchItem struct {
	key    string
	sub    *subscription.Compiled
	ev     delivery.Event
	hold   *hold
	record *hivemindv1.Delivery
	done   chan result
}

// batcher returns the batcher of a window length, made on first use.
func (e *Engine) batcher(window time.Duration) *delivery.Batcher[*batchItem] {
	e.batchMu.Lock()
	defer e.batchMu.Unlock()
	b := e.batchers[window]
	if b == nil {
		b = delivery.NewBatcher(window, 100, func(sub string, items []*batchItem) { e.flushBatch(e.runCtx, sub, items) })
		e.batchers[window] = b
	}
	return b
}

func (e *Engine) closeBatchers() {
	e.batchMu.Lock()
	bs := e.batchers
	e.batchers = map[time.Duration]*delivery.Batcher[*batchItem]{}
	e.batchMu.Unlock()
	for _, b := range bs {
		b.Close()
	}
}

// flushBatch sends one delivery (a mail) for the items whose claims still hold, then
// records and completes each of them.
func (e *Engine) flushBatch(ctx context.Context, sub string, items []*batchItem) {
	var live []*batchItem
	for _, it := range items {
		if it.hold.ctx.Err() != nil {
			it.done <- e.interrupted(ctx, it.hold)
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	s := live[0].sub.Sub
	events := make([]delivery.Event, len(live))
	for i, it := range live {
		events[i] = it.ev
	}
	var res delivery.Result
	ch, err := e.channel(s.GetTarget())
	if err != nil {
		res = delivery.Result{State: delivery.StateDeadLettered, Reason: err.Error()}
	} else {
		var attempts []delivery.Attempt
		res, err = ch.Deliver(ctx, delivery.Delivery{
			Subscription: sub, Target: s.GetTarget(), Secret: s.GetSecret(), Opaque: s.GetOpaque(), Capability: s.GetCapability(),
			Events: events, Since: events[0].Time,
		}, func(a delivery.Attempt) { attempts = append(attempts, a) })
		if err != nil {
			for _, it := range live {
				it.done <- e.interrupted(ctx, it.hold)
			}
			return
		}
		res.Attempts = attempts
	}
	for _, it := range live {
		r := res
		if slices.Contains(res.Expired, it.ev.ID) {
			r.State, r.Reason = delivery.StateExpired, "event passed its TTL expiry before the batch was sent"
		}
		for _, a := range res.Attempts {
			it.record.Attempts = append(it.record.Attempts, e.attemptProto(a))
		}
		it.done <- e.finishDelivery(ctx, it.hold, it.record, r)
	}
}
