package subscription

import (
	"slices"
	"strings"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
)

// Compiled is a stored subscription ready to match events.
type Compiled struct {
	Sub *hivemindv1.Subscription
	// Filter is nil when the subscription has none.
	Filter *filter.Filter
	// FilterErr is set when a stored filter no longer compiles (for
	// example after the limits changed); its deliveries fail with it.
	FilterErr error
	// CreateRevision is when the subscription was created: it hears of
	// events committed after it, not of history.
	CreateRevision int64
}

// Compile prepares a stored subscription.
func Compile(sub *hivemindv1.Subscription, createRevision int64, c *filter.Compiler) *Compiled {
	cs := &Compiled{Sub: sub, CreateRevision: createRevision}
	if sub.GetFilter() != "" {
		cs.Filter, cs.FilterErr = c.Compile(sub.GetFilter())
	}
	return cs
}

// Selects reports whether the subscription's hooks, prefix and types
// select ev; the filter, which may fail, is the caller's to run.
func (c *Compiled) Selects(ev delivery.Event) bool {
	s := c.Sub
	if s.GetDisabled() || ev.Revision <= c.CreateRevision || Internal(ev.URI) {
		return false
	}
	if len(s.GetHooks()) > 0 && !slices.ContainsFunc(s.GetHooks(), func(h hivemindv1.Hook) bool { return hookName(h) == ev.Hook }) {
		return false
	}
	if !strings.HasPrefix(ev.URI, s.GetPrefix()) {
		return false
	}
	return len(s.GetTypes()) == 0 || slices.Contains(s.GetTypes(), ev.Type)
}

// Internal reports whether uri is the notifier's own bookkeeping: its
// subscriptions and records, its delivery intents and the replicas'
// cursors. Those events are never delivered: every delivery writes some,
// so a subscription to them would feed itself.
func Internal(uri string) bool {
	if strings.HasPrefix(uri, "/notifier/") || strings.HasPrefix(uri, "/deliver/") {
		return true
	}
	rest, ok := strings.CutPrefix(uri, "/nodes/")
	if !ok {
		return false
	}
	_, sub, ok := strings.Cut(rest, "/")
	return ok && strings.HasPrefix(sub, "notifier/")
}
