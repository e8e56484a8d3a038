package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/backoff"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
)

// StateFilterError is the final state of a delivery whose filter failed
// (cost or time limit, a missing field): it is recorded, not sent.
const StateFilterError delivery.State = "filter_error"

// start hands a pair to a goroutine of its own.
func (e *Engine) start(ctx context.Context, p *pair) {
	p.running = true
	key, sub, ev := p.key, p.sub, p.ev
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		r := e.handle(ctx, key, sub, ev)
		select {
		case e.results <- r:
		case <-ctx.Done():
		}
	}()
}

// handle runs the filter, claims the pair and, if the claim is granted,
// delivers it, records it and completes the intent.
func (e *Engine) handle(ctx context.Context, key string, sub *subscription.Compiled, ev delivery.Event) result {
	select {
	case e.sem <- struct{}{}:
	case <-ctx.Done():
		return result{key: key}
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-e.sem
		}
	}
	defer release()

	var final delivery.State
	var reason string
	switch {
	case sub.FilterErr != nil:
		final, reason = StateFilterError, sub.FilterErr.Error()
	case sub.Filter != nil:
		ok, err := sub.Filter.Match(ctx, ev)
		if err != nil {
			final, reason = StateFilterError, err.Error()
		} else if !ok {
			return result{key: key, done: true}
		}
	}
	if final == "" && ev.Expired(time.Now()) {
		final, reason = delivery.StateExpired, "event passed its TTL expiry"
	}

	h, r := e.claim(ctx, key)
	if h == nil {
		return r
	}
	defer h.stop()
	d := e.newRecord(ctx, sub.Sub.GetName(), ev, h.intent)
	if final != "" {
		return e.finishDelivery(ctx, h, d, delivery.Result{State: final, Reason: reason})
	}
	if w := sub.Sub.GetBatchWindow().AsDuration(); w > 0 && e.batches(sub.Sub.GetTarget()) {
		item := &batchItem{key: key, sub: sub, ev: ev, hold: h, record: d, done: make(chan result, 1)}
		if e.batcher(w).Add(sub.Sub.GetName(), item) {
			release() // the window may be long; let other pairs run meanwhile
			return <-item.done
		}
	}
	res, err := e.send(h.ctx, sub, ev, d)
	if err != nil {
		return e.interrupted(ctx, h)
	}
	return e.finishDelivery(ctx, h, d, res)
}

// send makes the delivery to the subscription's target.
func (e *Engine) send(ctx context.Context, sub *subscription.Compiled, ev delivery.Event, d *hivemindv1.Delivery) (delivery.Result, error) {
	s := sub.Sub
	ch, err := e.channel(s.GetTarget())
	if err != nil {
		return delivery.Result{DeliveryID: d.GetId(), State: delivery.StateDeadLettered, Reason: err.Error()}, nil
	}
	return ch.Deliver(ctx, delivery.Delivery{
		ID: d.GetId(), Subscription: s.GetName(), Target: s.GetTarget(), Secret: s.GetSecret(),
		Opaque: s.GetOpaque(), Capability: s.GetCapability(), Events: []delivery.Event{ev}, Since: ev.Time,
	}, e.observer(ctx, d))
}

// channel is the channel of target, if it can deliver on this notifier.
func (e *Engine) channel(target string) (delivery.Channel, error) {
	ch, err := e.cfg.Channels.For(target)
	if err != nil {
		return nil, err
	}
	if err := ch.Ready(); err != nil {
		return nil, fmt.Errorf("notifier %s: %w", e.cfg.Name, err)
	}
	return ch, nil
}

// batches reports whether deliveries to target are batched here.
func (e *Engine) batches(target string) bool {
	ch, err := e.channel(target)
	return err == nil && ch.Batches()
}

// observer records a delivery as pending after each failed attempt that
// will be retried, so ListDeliveries shows it while it is owed.
func (e *Engine) observer(ctx context.Context, d *hivemindv1.Delivery) func(delivery.Attempt) {
	return func(a delivery.Attempt) {
		d.Attempts = append(d.Attempts, e.attemptProto(a))
		if a.Wait > 0 {
			d.State = "pending"
			if err := e.store.PutDelivery(ctx, d); err != nil {
				e.log.Debug("cannot record a pending delivery", "delivery", d.GetId(), "err", err)
			}
		}
	}
}

func (e *Engine) attemptProto(a delivery.Attempt) *hivemindv1.DeliveryAttempt {
	pa := &hivemindv1.DeliveryAttempt{
		At: timestamppb.New(a.Start), StatusCode: int32(a.StatusCode),
		Latency: durationpb.New(a.Latency), Notifier: e.cfg.Name,
	}
	if a.Err != nil {
		pa.Error = a.Err.Error()
	}
	return pa
}

// newRecord starts the record of a delivery; a replica taking a delivery
// over keeps the attempts its predecessor recorded.
func (e *Engine) newRecord(ctx context.Context, sub string, ev delivery.Event, in *hivemindv1.Intent) *hivemindv1.Delivery {
	d := &hivemindv1.Delivery{
		Id: delivery.ID(sub, ev.ID), Subscription: sub, EventId: ev.ID, EventRevision: ev.Revision, State: "pending",
	}
	if in.GetClaims() > 1 {
		if prev, err := e.store.GetDelivery(ctx, sub, d.Id); err == nil && prev != nil {
			d.Attempts = prev.GetAttempts()
		}
	}
	return d
}

// finishDelivery records the final state, disables the subscription on
// 410, and completes the intent.
func (e *Engine) finishDelivery(ctx context.Context, h *hold, d *hivemindv1.Delivery, res delivery.Result) result {
	d.State = string(res.State)
	d.CompletedAt = timestamppb.Now()
	// Recording and completing go on when the engine stops: the delivery
	// happened, and completing it now spares a repeat. They are bounded
	// by the lease.
	wctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), h.deadline())
	defer cancel()
	if res.State == delivery.StateDisabled {
		if err := e.store.Disable(wctx, d.GetSubscription(), res.Reason); err != nil {
			e.log.Warn("cannot disable the subscription", "subscription", d.GetSubscription(), "err", err)
		}
	}
	if res.State != delivery.StateDelivered {
		e.log.Info("delivery ended", "subscription", d.GetSubscription(), "delivery", d.GetId(), "state", res.State, "reason", res.Reason)
	}
	outcome := string(res.State)
	if res.Reason != "" {
		outcome += ": " + res.Reason
	}
	if len(outcome) > 512 {
		outcome = outcome[:512]
	}
	for wctx.Err() == nil {
		err := e.store.PutDelivery(wctx, d)
		if err == nil {
			break
		}
		e.log.Warn("cannot record a delivery yet", "delivery", d.GetId(), "err", err)
		_ = backoff.Sleep(wctx, 200*time.Millisecond)
	}
	for wctx.Err() == nil {
		_, err := e.cp.CompleteIntent(wctx, &hivemindv1.CompleteIntentRequest{Key: h.key, Holder: e.cfg.Name, Outcome: outcome})
		if err == nil {
			return result{key: h.key, done: true}
		}
		if status.Code(err) == codes.FailedPrecondition {
			// The lease ran out and another replica holds it now: it
			// will deliver again, with the same id.
			e.log.Warn("lost a delivery claim before completing it", "intent", h.key, "err", err)
			break
		}
		_ = backoff.Sleep(wctx, 200*time.Millisecond)
	}
	return result{key: h.key, retryAt: time.Now().Add(e.cfg.Lease)}
}

// interrupted ends a delivery that did not reach a final state: on
// shutdown the claim is released so another replica takes over now;
// when the lease was lost, the new holder delivers.
func (e *Engine) interrupted(ctx context.Context, h *hold) result {
	if ctx.Err() != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = e.cp.ReleaseIntent(rctx, &hivemindv1.ReleaseIntentRequest{Key: h.key, Holder: e.cfg.Name})
		return result{key: h.key}
	}
	return result{key: h.key, retryAt: time.Now().Add(e.cfg.Lease)}
}

// claim claims key. It returns a hold when granted; otherwise the result
// says whether the pair is done (completed by someone) or when to try
// again (when the holder's lease runs out).
func (e *Engine) claim(ctx context.Context, key string) (*hold, result) {
	sent := time.Now()
	resp, err := e.cp.ClaimIntent(ctx, &hivemindv1.ClaimIntentRequest{Key: key, Holder: e.cfg.Name, Lease: durationpb.New(e.cfg.Lease)})
	if err != nil {
		if ctx.Err() == nil {
			e.log.Debug("claim failed", "intent", key, "err", err)
		}
		return nil, result{key: key, retryAt: time.Now().Add(500*time.Millisecond + rand.N(500*time.Millisecond))}
	}
	in := resp.GetIntent()
	if !resp.GetGranted() {
		if in.GetState() == hivemindv1.Intent_STATE_COMPLETED {
			return nil, result{key: key, done: true}
		}
		// The expiry is on the leader's clock; claiming early only gets
		// another refusal with the current expiry.
		at := in.GetExpiresAt().AsTime().Add(20 * time.Millisecond)
		return nil, result{key: key, retryAt: maxTime(at, time.Now().Add(50*time.Millisecond))}
	}
	return e.newHold(ctx, key, sent, in), result{}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// hold is a granted claim, renewed every third of the lease until stop.
// Its ctx ends when the lease can no longer be counted on, which stops a
// delivery before another replica may take it over.
type hold struct {
	key    string
	intent *hivemindv1.Intent
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	until time.Time // the lease, measured from before the claim was sent
}

func (e *Engine) newHold(ctx context.Context, key string, sent time.Time, in *hivemindv1.Intent) *hold {
	h := &hold{key: key, intent: in, done: make(chan struct{}), until: sent.Add(e.cfg.Lease)}
	h.ctx, h.cancel = context.WithCancel(ctx)
	// Stop using the claim a quarter lease before it may run out.
	margin := e.cfg.Lease / 4
	go func() {
		defer close(h.done)
		t := time.NewTicker(e.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-h.ctx.Done():
				return
			case <-t.C:
			}
			sent := time.Now()
			rctx, cancel := context.WithTimeout(h.ctx, e.cfg.Lease/3)
			resp, err := e.cp.ClaimIntent(rctx, &hivemindv1.ClaimIntentRequest{Key: key, Holder: e.cfg.Name, Lease: durationpb.New(e.cfg.Lease)})
			cancel()
			switch {
			case err == nil && resp.GetGranted():
				h.mu.Lock()
				h.until = sent.Add(e.cfg.Lease)
				h.mu.Unlock()
			case err == nil:
				e.log.Warn("a delivery claim was lost", "intent", key, "holder", resp.GetIntent().GetHolder())
				h.cancel()
				return
			}
			if time.Until(h.deadline()) < margin {
				e.log.Warn("cannot renew a delivery claim; giving it up", "intent", key, "err", err)
				h.cancel()
				return
			}
		}
	}()
	return h
}

func (h *hold) deadline() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.until
}

func (h *hold) stop() {
	h.cancel()
	<-h.done
}
