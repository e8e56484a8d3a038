package cluster

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/hivemind/hivemind/pkg/cpclient"
	"github.com/hivemind/hivemind/pkg/fsmevent"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

// Remote is the registry of a role that is not on the control plane: it
// forwards joins and leaves to the control plane and reads the registry
// with ordinary Range and Watch calls.
type Remote struct {
	CP *cpclient.Client
	// Log receives the events Watch skips; nil means slog.Default().
	Log *slog.Logger
}

// Join implements Registry.
func (r Remote) Join(ctx context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error) {
	return r.CP.Join(ctx, req)
}

// Leave implements Registry.
func (r Remote) Leave(ctx context.Context, req *hivemindv1.LeaveRequest) (*hivemindv1.LeaveResponse, error) {
	return r.CP.Leave(ctx, req)
}

// List implements Registry.
func (r Remote) List(ctx context.Context, stale bool) (*hivemindv1.MembershipDigest, error) {
	d := &hivemindv1.MembershipDigest{}
	after := ""
	for {
		resp, err := r.CP.Range(ctx, &hivemindv1.RangeRequest{Prefix: registry.Prefix, StartAfter: after, Stale: stale})
		if err != nil {
			return nil, err
		}
		// Every page reflects at least the first page's revision; report the
		// first, the oldest state the whole answer may mix in.
		if d.Revision == 0 {
			d.Revision, d.Epoch = resp.GetHeader().GetRevision(), resp.GetHeader().GetEpoch()
		}
		for _, kv := range resp.GetKvs() {
			m, err := registry.Decode(kv.GetValue())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", kv.GetKey(), err)
			}
			d.Members = append(d.Members, m)
			after = kv.GetKey()
		}
		if !resp.GetMore() {
			return d, nil
		}
	}
}

// Watch implements Registry.
func (r Remote) Watch(ctx context.Context, start int64, fn func([]*hivemindv1.MemberEvent) error) error {
	req := &hivemindv1.WatchRequest{StartRevision: start, Prefix: registry.Prefix, Types: registry.EventTypes}
	return r.CP.Watch(ctx, req, func(resp *hivemindv1.WatchResponse) error {
		evs := MemberEvents(r.Log, resp.GetEvents())
		if len(evs) == 0 {
			return nil
		}
		return fn(evs)
	})
}

// MemberEvents turns registry events into member events. Only the state
// machine's member events count, read from the key they changed
// (fsmevent.Member); any other event — an appended member.failed with a
// spoofed source, a record that does not decode — is logged to log (nil:
// slog.Default()) and skipped, so that no event can change what a watcher
// sees of the registry, nor end its watch.
func MemberEvents(log *slog.Logger, events []*hivemindv1.Event) []*hivemindv1.MemberEvent {
	var out []*hivemindv1.MemberEvent
	for _, e := range events {
		m, err := fsmevent.Member(e)
		if err != nil {
			if log == nil {
				log = slog.Default()
			}
			log.Warn("registry event skipped", "revision", e.GetRevision(), "err", err)
			continue
		}
		out = append(out, &hivemindv1.MemberEvent{Type: e.GetType(), Member: m, Revision: e.GetRevision(), EventId: e.GetId()})
	}
	return out
}
