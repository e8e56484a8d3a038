// Package fsmevent tells the events the control plane's state machine
// emitted from events a caller appended, for the roles that take state
// from the event log (dns processors, notifiers, membership watchers, host
// agents).
//
// The state machine's key and member events (kv.put, kv.delete,
// member.*) carry the key they changed in Event.kv, and Event.kv exists
// only on those: AppendEvent has no field for it. So a consumer takes
// state from an event's kv, never from its type, uri or payload alone; an
// appended event that names itself kv.delete or member.failed has no kv
// and changes nothing. The control plane also refuses such appends (issue
// 13); this is the consumers' half, so that a forged event does nothing
// even where that check is missing or wrong.
//
// The functions return an error that says why an event is not a state
// event, for the consumer to log before it skips the event; they never
// panic, whatever the event holds.
package fsmevent

import (
	"errors"
	"fmt"
	"strings"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

// The key event types of the state machine.
const (
	TypePut    = "kv.put"
	TypeDelete = "kv.delete"
)

// ErrNotState is wrapped by every error of this package: the event is not
// one the state machine emitted in the shape asked for.
var ErrNotState = errors.New("not a state-machine event")

func notState(ev *hivemindv1.Event, format string, args ...any) error {
	return fmt.Errorf("%w: event %q (type %q, uri %q, source %q): %s", ErrNotState,
		ev.GetId(), ev.GetType(), ev.GetUri(), ev.GetSource(), fmt.Sprintf(format, args...))
}

// KeyChange is what a kv.put or kv.delete did to one key.
type KeyChange struct {
	// KV is the key after a put, before a delete.
	KV      *hivemindv1.KeyValue
	Deleted bool
}

// Key returns the change a kv.put or kv.delete event records. The event
// must carry its key (Event.kv) under the uri it names; the state comes
// from that key, never from the payload.
func Key(ev *hivemindv1.Event) (KeyChange, error) {
	var deleted bool
	switch ev.GetType() {
	case TypePut:
	case TypeDelete:
		deleted = true
	default:
		return KeyChange{}, notState(ev, "type is not %s or %s", TypePut, TypeDelete)
	}
	kv := ev.GetKv()
	if kv == nil {
		return KeyChange{}, notState(ev, "kv: missing; the state machine sets it on every key event, so this one was appended")
	}
	if kv.GetKey() != ev.GetUri() {
		return KeyChange{}, notState(ev, "kv.key %q is not the uri", kv.GetKey())
	}
	if strings.HasPrefix(kv.GetKey(), registry.Prefix) {
		return KeyChange{}, notState(ev, "a key event under %s, which only member events change", registry.Prefix)
	}
	return KeyChange{KV: kv, Deleted: deleted}, nil
}

// IsMemberType reports whether typ is one of the registry's event types.
func IsMemberType(typ string) bool {
	for _, t := range registry.EventTypes {
		if t == typ {
			return true
		}
	}
	return false
}

// Member returns the member record a member.* event stored: decoded from
// the event's key under the registry prefix, never from its payload, and
// named as the key names it.
func Member(ev *hivemindv1.Event) (*hivemindv1.ClusterMember, error) {
	if !IsMemberType(ev.GetType()) {
		return nil, notState(ev, "type is not a member event (%s)", strings.Join(registry.EventTypes, ", "))
	}
	kv := ev.GetKv()
	if kv == nil {
		return nil, notState(ev, "kv: missing; the state machine sets it on every member event, so this one was appended")
	}
	if kv.GetKey() != ev.GetUri() {
		return nil, notState(ev, "kv.key %q is not the uri", kv.GetKey())
	}
	name := registry.NameOf(kv.GetKey())
	if name == "" {
		return nil, notState(ev, "kv.key %q is not a registry key (%s<name>)", kv.GetKey(), registry.Prefix)
	}
	m, err := registry.Decode(kv.GetValue())
	if err != nil {
		return nil, notState(ev, "kv.value: %v", err)
	}
	if m.GetName() != name {
		return nil, notState(ev, "kv.value names %q, the key %q", m.GetName(), name)
	}
	want := registry.EventFor(m.GetState())
	if ev.GetType() == registry.EventJoined && m.GetState() == hivemindv1.MemberState_MEMBER_STATE_ALIVE {
		want = registry.EventJoined // a join records an alive member
	}
	if want != ev.GetType() {
		return nil, notState(ev, "kv.value: state %s is not what %s records", registry.StateName(m.GetState()), ev.GetType())
	}
	return m, nil
}
