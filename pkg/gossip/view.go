package gossip

import (
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// State is a member's state in this node's view.
type State int

// States, in memberlist's order.
const (
	StateAlive State = iota
	StateSuspect
	StateDead
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "unknown"
}

// Member is what this node knows of one member.
type Member struct {
	Name  string
	State State
	// Addr is the gossip address, host:port.
	Addr string
	Meta Meta
	// StateChanged is when this node saw the state change.
	StateChanged time.Time
	// LastContact is when this node last had a probe answered by the
	// member; zero until the first.
	LastContact time.Time
	// RTT is the round trip of that probe.
	RTT time.Duration
}

// EventType says what changed.
type EventType int

// Event types.
const (
	// EventJoin: a member is new, or back after being dead or left.
	EventJoin EventType = iota + 1
	// EventUpdate: a member's metadata changed.
	EventUpdate
	// EventSuspect: this node's probe of the member failed; memberlist
	// suspects it until it refutes or is declared dead.
	EventSuspect
	// EventAlive: a suspect member answered again.
	EventAlive
	// EventDead: the member was declared dead.
	EventDead
	// EventLeft: the member left gracefully.
	EventLeft
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventSuspect:
		return "suspect"
	case EventAlive:
		return "alive"
	case EventDead:
		return "dead"
	case EventLeft:
		return "left"
	}
	return "unknown"
}

// Event is one change of the view, with the member as it is after it.
type Event struct {
	Type   EventType
	Member Member
}

// Observer is told of every change of the view. Calls come in order, one
// at a time, from a goroutine of the agent's; an Observer may call the
// Agent.
type Observer interface {
	MemberEvent(Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Event)

// MemberEvent calls f.
func (f ObserverFunc) MemberEvent(e Event) { f(e) }

// PingHook is where probes can carry more than liveness (for instance
// network coordinates). Both methods are called from memberlist's
// goroutines and must not block.
type PingHook interface {
	// AckPayload is appended to this node's answers to probes.
	AckPayload() []byte
	// PingComplete is called when a probe of member is answered.
	PingComplete(member string, rtt time.Duration, payload []byte)
}

// view is this node's table of members, dead and left ones included
// (memberlist forgets those). It is fed by memberlist's delegates, which
// run under memberlist's own lock, so it never calls memberlist.
type view struct {
	mu      sync.Mutex
	members map[string]*Member
	emit    func(Event) // queues; never blocks
}

func (v *view) set(n *memberlist.Node, st State, t EventType) {
	meta, _ := DecodeMeta(n.Meta) // admitted nodes always decode
	if t == EventLeft && !meta.Leaving {
		t, st = EventDead, StateDead
	}
	v.mu.Lock()
	m, ok := v.members[n.Name]
	if !ok {
		m = &Member{Name: n.Name}
		v.members[n.Name] = m
	}
	if !ok || m.State != st {
		m.StateChanged = time.Now()
	}
	m.State, m.Addr, m.Meta = st, n.Address(), meta
	e := Event{Type: t, Member: *m}
	v.mu.Unlock()
	v.emit(e)
}

// NotifyJoin, NotifyUpdate and NotifyLeave are memberlist's EventDelegate.
// memberlist reports a leave and a failure alike; a node that leaves
// announces it in its metadata first (Agent.Leave), which tells them apart.
func (v *view) NotifyJoin(n *memberlist.Node)   { v.set(n, StateAlive, EventJoin) }
func (v *view) NotifyUpdate(n *memberlist.Node) { v.set(n, StateAlive, EventUpdate) }
func (v *view) NotifyLeave(n *memberlist.Node)  { v.set(n, StateLeft, EventLeft) }

// transition moves a member from one state to another, if it is in from.
func (v *view) transition(name string, from, to State, t EventType) {
	v.mu.Lock()
	m, ok := v.members[name]
	if !ok || m.State != from {
		v.mu.Unlock()
		return
	}
	m.State, m.StateChanged = to, time.Now()
	e := Event{Type: t, Member: *m}
	v.mu.Unlock()
	v.emit(e)
}

// contact records an answered probe; a suspect that answers is alive.
func (v *view) contact(name string, rtt time.Duration) {
	v.mu.Lock()
	if m, ok := v.members[name]; ok {
		m.LastContact, m.RTT = time.Now(), rtt
	}
	v.mu.Unlock()
	v.transition(name, StateSuspect, StateAlive, EventAlive)
}

func (v *view) snapshot() map[string]Member {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]Member, len(v.members))
	for k, m := range v.members {
		out[k] = *m
	}
	return out
}

func (v *view) get(name string) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m, ok := v.members[name]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// dispatcher runs callbacks in order on one goroutine, so that delegates
// called under memberlist's lock only queue and never wait on a caller.
type dispatcher struct {
	mu    sync.Mutex
	queue []func()
	wake  chan struct{}
	done  chan struct{}
	stop  chan struct{}
}

func newDispatcher() *dispatcher {
	d := &dispatcher{wake: make(chan struct{}, 1), done: make(chan struct{}), stop: make(chan struct{})}
	go d.run()
	return d
}

func (d *dispatcher) post(f func()) {
	d.mu.Lock()
	d.queue = append(d.queue, f)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run() {
	defer close(d.done)
	for {
		d.mu.Lock()
		q := d.queue
		d.queue = nil
		d.mu.Unlock()
		for _, f := range q {
			f()
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-d.wake:
		case <-d.stop:
			return
		}
	}
}

// close runs what is queued and stops.
func (d *dispatcher) close() {
	close(d.stop)
	<-d.done
}
