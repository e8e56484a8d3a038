package webhook

import (
	"context"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

// Channel is the webhook delivery channel: http and https targets, one
// event per request, signed with the subscription's secret.
type Channel struct{ s *Sender }

// NewChannel returns the channel that delivers with s.
func NewChannel(s *Sender) *Channel { return &Channel{s: s} }

// ValidateTarget checks a webhook URL.
func (c *Channel) ValidateTarget(target string) error { return ValidateURL(target) }

// Ready is always nil: webhooks need no configuration.
func (c *Channel) Ready() error { return nil }

// Batches is false: a webhook carries one event.
func (c *Channel) Batches() bool { return false }

// NewSecret is a fresh signing secret.
func (c *Channel) NewSecret() string { return NewSecret() }

// Deliver posts the delivery's one event.
func (c *Channel) Deliver(ctx context.Context, d delivery.Delivery, observe func(delivery.Attempt)) (delivery.Result, error) {
	if len(d.Events) != 1 {
		return delivery.Result{DeliveryID: d.ID, State: delivery.StateDeadLettered, Reason: "a webhook carries exactly one event"}, nil
	}
	return c.s.Deliver(ctx, Request{
		DeliveryID: d.ID, Subscription: d.Subscription, Event: d.Events[0], Since: d.Since,
		Target: Target{URL: d.Target, Secret: d.Secret, Opaque: d.Opaque, Capability: d.Capability},
	}, observe)
}
