package fsm

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
)

// intentPayload is the JSON payload of intent events. It is encoding/json
// of a struct, not protojson, because protojson's output is deliberately
// unstable and every replica must produce the same bytes.
type intentPayload struct {
	Holder    string `json:"holder"`
	State     string `json:"state"`
	Claims    int64  `json:"claims"`
	ExpiresAt string `json:"expires_at,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
}

func (m *Machine) intentEvent(c *change, typ string, hook hivemindv1.Hook, in *hivemindv1.Intent) {
	p := intentPayload{
		Holder:  in.GetHolder(),
		State:   strings.ToLower(strings.TrimPrefix(in.GetState().String(), "STATE_")),
		Claims:  in.GetClaims(),
		Outcome: in.GetOutcome(),
	}
	if in.GetState() == hivemindv1.Intent_STATE_CLAIMED {
		p.ExpiresAt = in.GetExpiresAt().AsTime().Format(time.RFC3339Nano)
	}
	payload, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("fsm: encoding an intent payload: %v", err)) // strings and an int cannot fail
	}
	c.emit(&hivemindv1.Event{Type: typ, Hook: hook, Uri: in.GetKey(), Payload: payload})
}

func (m *Machine) applyClaim(c *change, req *hivemindv1.ClaimIntentRequest) *hivemindv1.ClaimIntentResponse {
	now := c.ts.Physical()
	lease := time.Duration(DefaultLease) * time.Millisecond
	if l := req.GetLease(); l != nil {
		lease = l.AsDuration()
	}
	cur := m.intents[req.GetKey()]
	switch {
	case cur != nil && cur.State == hivemindv1.Intent_STATE_COMPLETED:
		return &hivemindv1.ClaimIntentResponse{Granted: false, Intent: cur, Header: c.header()}
	case cur != nil && cur.State == hivemindv1.Intent_STATE_CLAIMED && cur.Holder == req.GetHolder():
		in := cloneIntent(cur)
		in.Lease = durationpb.New(lease)
		in.ExpiresAt = timestamp(now.Add(lease))
		m.intents[in.Key] = in
		m.intentEvent(c, EventIntentRenewed, hivemindv1.Hook_HOOK_MODIFY, in)
		return &hivemindv1.ClaimIntentResponse{Granted: true, Intent: in, Header: c.header()}
	case cur != nil && cur.State == hivemindv1.Intent_STATE_CLAIMED && !cur.ExpiresAt.AsTime().Before(now):
		return &hivemindv1.ClaimIntentResponse{Granted: false, Intent: cur, Header: c.header()}
	}
	// Free, released, or its lease ran out: the first committed claim wins.
	in := &hivemindv1.Intent{
		Key:           req.GetKey(),
		Holder:        req.GetHolder(),
		State:         hivemindv1.Intent_STATE_CLAIMED,
		ClaimRevision: c.rev,
		Lease:         durationpb.New(lease),
		ExpiresAt:     timestamp(now.Add(lease)),
		Claims:        1,
	}
	hook := hivemindv1.Hook_HOOK_CREATE
	if cur != nil {
		in.Claims = cur.Claims + 1
		hook = hivemindv1.Hook_HOOK_MODIFY
	}
	m.intents[in.Key] = in
	m.intentEvent(c, EventIntentClaimed, hook, in)
	return &hivemindv1.ClaimIntentResponse{Granted: true, Intent: in, Header: c.header()}
}

// held returns the intent if holder holds it now, else an error saying why.
func (m *Machine) held(key, holder string) (*hivemindv1.Intent, error) {
	cur := m.intents[key]
	switch {
	case cur == nil:
		return nil, fmt.Errorf("intent %s does not exist", key)
	case cur.State != hivemindv1.Intent_STATE_CLAIMED:
		return nil, fmt.Errorf("intent %s is %s, not claimed", key, cur.State)
	case cur.Holder != holder:
		return nil, fmt.Errorf("intent %s is held by %q, not %q", key, cur.Holder, holder)
	}
	return cur, nil
}

func (m *Machine) applyComplete(c *change, req *hivemindv1.CompleteIntentRequest) (*hivemindv1.CompleteIntentResponse, error) {
	cur, err := m.held(req.GetKey(), req.GetHolder())
	if err != nil {
		return nil, err
	}
	in := cloneIntent(cur)
	in.State = hivemindv1.Intent_STATE_COMPLETED
	in.Outcome = req.GetOutcome()
	m.intents[in.Key] = in
	m.intentEvent(c, EventIntentCompleted, hivemindv1.Hook_HOOK_MODIFY, in)
	return &hivemindv1.CompleteIntentResponse{Intent: in, Header: c.header()}, nil
}

func (m *Machine) applyRelease(c *change, req *hivemindv1.ReleaseIntentRequest) (*hivemindv1.ReleaseIntentResponse, error) {
	cur, err := m.held(req.GetKey(), req.GetHolder())
	if err != nil {
		return nil, err
	}
	in := cloneIntent(cur)
	in.State = hivemindv1.Intent_STATE_RELEASED
	m.intents[in.Key] = in
	m.intentEvent(c, EventIntentReleased, hivemindv1.Hook_HOOK_MODIFY, in)
	return &hivemindv1.ReleaseIntentResponse{Intent: in, Header: c.header()}, nil
}

// extendLeases gives every live lease at least one full lease length from
// the new leader's clock (see the package documentation).
func (m *Machine) extendLeases(ts hlc.Timestamp) {
	now := ts.Physical()
	for k, cur := range m.intents {
		if cur.State != hivemindv1.Intent_STATE_CLAIMED {
			continue
		}
		floor := now.Add(cur.Lease.AsDuration())
		if cur.ExpiresAt.AsTime().Before(floor) {
			in := cloneIntent(cur)
			in.ExpiresAt = timestamp(floor)
			m.intents[k] = in
		}
	}
}

func cloneIntent(in *hivemindv1.Intent) *hivemindv1.Intent {
	return proto.Clone(in).(*hivemindv1.Intent)
}

func (m *Machine) applyCompact(c *change, req *hivemindv1.CompactRequest) (*hivemindv1.CompactResponse, error) {
	if req.GetRevision() > m.rev {
		return nil, outOfRange("revision", "%d is after the current revision %d", req.GetRevision(), m.rev)
	}
	if req.GetRevision() > m.oldest {
		m.dropBefore(req.GetRevision())
		m.epoch++
		c.emit(&hivemindv1.Event{Type: EventCompacted, Hook: hivemindv1.Hook_HOOK_MODIFY, Uri: "/cluster/epoch",
			Payload: []byte(fmt.Sprintf(`{"epoch":%d,"oldest_revision":%d}`, m.epoch, m.oldest))})
	}
	return &hivemindv1.CompactResponse{Epoch: m.epoch, OldestRevision: m.oldest, Header: c.header()}, nil
}
