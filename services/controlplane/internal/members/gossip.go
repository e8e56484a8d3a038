package members

import (
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
)

// ObserverFunc adapts a function to Observer.
type ObserverFunc func() map[string]Observation

// Observe calls f.
func (f ObserverFunc) Observe() map[string]Observation { return f() }

// Observe reads a gossip agent's view as the reconciler needs it.
func Observe(a *gossip.Agent) map[string]Observation {
	out := map[string]Observation{}
	for name, m := range a.Members() {
		out[name] = Observation{State: stateOf(m.State), Generation: m.Meta.Incarnation}
	}
	return out
}

func stateOf(s gossip.State) hivemindv1.MemberState {
	switch s {
	case gossip.StateAlive:
		return hivemindv1.MemberState_MEMBER_STATE_ALIVE
	case gossip.StateSuspect:
		return hivemindv1.MemberState_MEMBER_STATE_SUSPECT
	case gossip.StateDead:
		return hivemindv1.MemberState_MEMBER_STATE_FAILED
	case gossip.StateLeft:
		return hivemindv1.MemberState_MEMBER_STATE_LEFT
	}
	return hivemindv1.MemberState_MEMBER_STATE_UNSPECIFIED
}
