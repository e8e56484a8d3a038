package cluster

import (
	"context"
	"fmt"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

// Remote is the registry of a role that is not on the control plane: it
// forwards joins and leaves to the control plane and reads the registry
// with ordinary Range and Watch calls.
type Remote struct {
	CP *cpclient.Client
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
		evs, err := MemberEvents(resp.GetEvents())
		if err != nil || len(evs) == 0 {
			return err
		}
		return fn(evs)
	})
}

// MemberEvents turns registry events into member events.
func MemberEvents(events []*hivemindv1.Event) ([]*hivemindv1.MemberEvent, error) {
	var out []*hivemindv1.MemberEvent
	for _, e := range events {
		m, err := registry.Decode(e.GetPayload())
		if err != nil {
			return nil, fmt.Errorf("event %s: %w", e.GetId(), err)
		}
		out = append(out, &hivemindv1.MemberEvent{Type: e.GetType(), Member: m, Revision: e.GetRevision(), EventId: e.GetId()})
	}
	return out, nil
}
