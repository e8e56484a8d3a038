package mail

import (
	"context"
	"errors"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

// Channel is the mail delivery channel: mailto: targets, one event or a
// batch per message, through the configured SMTP relay.
type Channel struct{ s *Sender }

// NewChannel returns the channel that sends with s; s nil (no relay
// configured) makes a channel that validates targets but is not Ready.
func NewChannel(s *Sender) *Channel { return &Channel{s: s} }

// errNoRelay says why a notifier without a relay cannot send mail.
var errNoRelay = errors.New("this notifier has no SMTP relay configured (--smtp-relay)")

// ValidateTarget checks a mailto: target.
func (c *Channel) ValidateTarget(target string) error {
	_, err := ParseTarget(target)
	return err
}

// Ready is nil when a relay is configured.
func (c *Channel) Ready() error {
	if c.s == nil {
		return errNoRelay
	}
	return nil
}

// Batches is true: a message may carry a batch of events.
func (c *Channel) Batches() bool { return true }

// NewSecret is "": mail is not signed.
func (c *Channel) NewSecret() string { return "" }

// Deliver sends one message with the delivery's events.
func (c *Channel) Deliver(ctx context.Context, d delivery.Delivery, observe func(delivery.Attempt)) (delivery.Result, error) {
	if err := c.Ready(); err != nil {
		return delivery.Result{DeliveryID: d.ID, State: delivery.StateDeadLettered, Reason: err.Error()}, nil
	}
	to, err := ParseTarget(d.Target)
	if err != nil {
		return delivery.Result{DeliveryID: d.ID, State: delivery.StateDeadLettered, Reason: err.Error()}, nil
	}
	return c.s.Deliver(ctx, Message{
		DeliveryID: d.ID, Subscription: d.Subscription, To: to, Events: d.Events,
		Opaque: d.Opaque, Capability: d.Capability, Since: d.Since,
	}, observe)
}
