// Package delivery holds what webhook and mail delivery share: the event as
// a notifier sees it, the delivery id, and the retry loop that turns the
// outcome of each attempt into a final state (delivered, dead-lettered,
// disabled or expired).
//
// The loop owns no clock-independent state and no I/O of its own: a sender
// supplies one attempt as a function, and the loop decides whether and when
// to call it again.
package delivery

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Hook is what happened to the resource: create, modify, delete or query.
type Hook string

// The hooks an event can fire, as subscriptions name them.
const (
	HookCreate Hook = "create"
	HookModify Hook = "modify"
	HookDelete Hook = "delete"
	HookQuery  Hook = "query"
)

// What is the past-tense word receivers get for a hook ("created",
// "updated", "deleted", "queried"); an unknown hook gives "".
func (h Hook) What() string {
	switch h {
	case HookCreate:
		return "created"
	case HookModify:
		return "updated"
	case HookDelete:
		return "deleted"
	case HookQuery:
		return "queried"
	}
	return ""
}

// TTL bounds how far and how long an event travels.
type TTL struct {
	MaxHops   uint32
	Hops      uint32
	ExpiresAt time.Time // zero: never expires
}

// Event is one committed event of the log, as filters and senders see it.
type Event struct {
	ID       string
	Revision int64
	Type     string
	Hook     Hook
	URI      string
	Source   string
	Time     time.Time
	Payload  []byte
	TTL      TTL
}

// Expired reports whether the event is past its TTL expiry at now; such an
// event is not delivered.
func (e Event) Expired(now time.Time) bool {
	return !e.TTL.ExpiresAt.IsZero() && !now.Before(e.TTL.ExpiresAt)
}

// FromProto converts an event of the log's wire form.
func FromProto(p *hivemindv1.Event) Event {
	ev := Event{
		ID:       p.GetId(),
		Revision: p.GetRevision(),
		Type:     p.GetType(),
		Hook:     hookFromProto(p.GetHook()),
		URI:      p.GetUri(),
		Source:   p.GetSource(),
		Payload:  p.GetPayload(),
	}
	if p.GetTime() != nil {
		ev.Time = p.GetTime().AsTime()
	}
	if t := p.GetTtl(); t != nil {
		ev.TTL.MaxHops = t.GetMaxHops()
		ev.TTL.Hops = t.GetHops()
		if t.GetExpiresAt() != nil {
			ev.TTL.ExpiresAt = t.GetExpiresAt().AsTime()
		}
	}
	return ev
}

func hookFromProto(h hivemindv1.Hook) Hook {
	switch h {
	case hivemindv1.Hook_HOOK_CREATE:
		return HookCreate
	case hivemindv1.Hook_HOOK_MODIFY:
		return HookModify
	case hivemindv1.Hook_HOOK_DELETE:
		return HookDelete
	case hivemindv1.Hook_HOOK_QUERY:
		return HookQuery
	}
	return ""
}

// ID is the delivery id of an event for a subscription. It depends on
// nothing else, so every attempt and every replica that takes a delivery
// over sends the same id, and a receiver can drop a repeat.
func ID(subscription, eventID string) string {
	// NUL cannot occur in either part, so no two pairs hash the same input.
	sum := sha256.Sum256([]byte("hivemind delivery\x00" + subscription + "\x00" + eventID))
	return "msg_" + hex.EncodeToString(sum[:16])
}
