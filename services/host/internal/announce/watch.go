package announce

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/fsmevent"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Watch calls send with the live instances of a service (as Discover
// lists them) and the revision they reflect: once at the start, then
// whenever the set or an instance changes, including when an instance
// expires by time. It returns when ctx ends, send fails, or the
// control-plane watch fails for good.
func (r *Registry) Watch(ctx context.Context, service string, send func([]*hivemindv1.Announcement, int64) error) error {
	if err := ValidateName(service, nil); err != nil {
		return err
	}
	st, err := r.st()
	if err != nil {
		return err
	}
	all, rev, err := r.list(ctx, st, service)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan *hivemindv1.WatchResponse)
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- st.Watch(ctx, &hivemindv1.WatchRequest{StartRevision: rev + 1, Prefix: ServicePrefix(service)},
			func(resp *hivemindv1.WatchResponse) error {
				select {
				case updates <- resp:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
	}()

	var last []*hivemindv1.Announcement
	sent := false
	for {
		now := r.now()
		live := liveSorted(all, now)
		if !sent || !sameSet(live, last) {
			if err := send(live, rev); err != nil {
				return err
			}
			last, sent = live, true
		}
		wait := time.Hour
		for _, a := range live {
			wait = min(wait, a.GetUpdatedAt().AsTime().Add(a.GetTtl().AsDuration()).Sub(now))
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case err := <-watchErr:
			t.Stop()
			return err
		case <-t.C:
		case resp := <-updates:
			t.Stop()
			for _, ev := range resp.GetEvents() {
				r.applyEvent(all, ServicePrefix(service), ev)
				rev = max(rev, ev.GetRevision())
			}
			if resp.GetProgress() {
				rev = max(rev, resp.GetHeader().GetRevision())
			}
		}
	}
}

// sameSet reports whether two sorted lists hold the same announcements.
func sameSet(a, b []*hivemindv1.Announcement) bool {
	return slices.EqualFunc(a, b, func(x, y *hivemindv1.Announcement) bool { return proto.Equal(x, y) })
}

// applyEvent applies one watched event to the instances held. Only the
// state machine's key events under prefix change them (fsmevent.Key): an
// appended event (a service's own notes, or a forged kv.delete) changes
// nothing, and one that claims to be a key event is logged.
func (r *Registry) applyEvent(all map[string]*hivemindv1.Announcement, prefix string, ev *hivemindv1.Event) {
	if t := ev.GetType(); t != fsmevent.TypePut && t != fsmevent.TypeDelete {
		return
	}
	c, err := fsmevent.Key(ev)
	if err != nil {
		r.log.Warn("service event skipped", "revision", ev.GetRevision(), "err", err)
		return
	}
	key := c.KV.GetKey()
	switch {
	case !strings.HasPrefix(key, prefix):
	case c.Deleted:
		delete(all, key)
	default:
		if a := r.decode(c.KV); a != nil {
			all[key] = a
		}
	}
}
