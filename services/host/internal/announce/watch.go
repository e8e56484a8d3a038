package announce

import (
	"context"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

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
				kv := ev.GetKv()
				if kv == nil {
					continue
				}
				if ev.GetHook() == hivemindv1.Hook_HOOK_DELETE {
					delete(all, kv.GetKey())
				} else if a := r.decode(kv); a != nil {
					all[kv.GetKey()] = a
				}
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
