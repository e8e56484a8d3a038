package delivery

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Channel sends deliveries to one kind of target (webhooks to http and
// https URLs, mail to mailto: addresses, …), with its own retries within
// the Policy it was made with. Adding a channel is a package with a type
// that implements Channel, registered by its schemes in Channels.
type Channel interface {
	// ValidateTarget checks a target of this channel's schemes when a
	// subscription is stored; the error names what is wrong with it.
	ValidateTarget(target string) error
	// Ready is nil when the channel can deliver on this notifier, or
	// says why not (e.g. no SMTP relay configured).
	Ready() error
	// Batches reports whether one delivery may carry several events (a
	// subscription's batch_window).
	Batches() bool
	// NewSecret is a fresh secret for a subscription that has none, or ""
	// when the channel does not sign what it sends.
	NewSecret() string
	// Deliver sends d with retries, telling observe of every attempt. The
	// error is set only when ctx ended first: the delivery was
	// interrupted, not finished, and is not recorded as final.
	Deliver(ctx context.Context, d Delivery, observe func(Attempt)) (Result, error)
}

// Delivery is what a channel sends: one or more events (several only when
// the channel Batches) for one subscription.
type Delivery struct {
	// ID identifies the delivery to the receiver; "" means ID of the
	// subscription and the event for one event (channels choose for
	// several).
	ID           string
	Subscription string
	Target       string
	Secret       string
	// Opaque and Capability are the subscription's, passed along.
	Opaque     string
	Capability string
	Events     []Event
	// Since is when the delivery began (see Job); zero is now.
	Since time.Time
}

// Channels chooses the channel of a target by its scheme. Register
// every channel before use; then it is safe for concurrent use.
type Channels struct {
	byScheme map[string]Channel
}

// NewChannels returns an empty set of channels.
func NewChannels() *Channels { return &Channels{byScheme: map[string]Channel{}} }

// Register makes ch the channel of targets with these schemes (lower
// case, without the colon).
func (c *Channels) Register(ch Channel, schemes ...string) {
	for _, s := range schemes {
		c.byScheme[strings.ToLower(s)] = ch
	}
}

// Scheme is a target's scheme, lower case: "https" of
// "https://example.com/hook", "mailto" of "mailto:ops@example.com".
func Scheme(target string) string {
	s, _, ok := strings.Cut(target, ":")
	if !ok {
		return ""
	}
	return strings.ToLower(s)
}

// For returns the channel of target, or an error naming the schemes this
// notifier knows.
func (c *Channels) For(target string) (Channel, error) {
	if ch := c.byScheme[Scheme(target)]; ch != nil {
		return ch, nil
	}
	known := make([]string, 0, len(c.byScheme))
	for s := range c.byScheme {
		known = append(known, s+":")
	}
	sort.Strings(known)
	return nil, fmt.Errorf("no delivery channel for this target's scheme; targets start with one of %s", strings.Join(known, ", "))
}

// Batches reports whether target's channel batches events.
func (c *Channels) Batches(target string) bool {
	ch, err := c.For(target)
	return err == nil && ch.Batches()
}

// BatchingSchemes lists the schemes of channels that batch, with their
// colons ("mailto:"), sorted.
func (c *Channels) BatchingSchemes() []string {
	var out []string
	for s, ch := range c.byScheme {
		if ch.Batches() {
			out = append(out, s+":")
		}
	}
	sort.Strings(out)
	return out
}
