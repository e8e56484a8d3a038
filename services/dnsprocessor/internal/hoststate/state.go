package hoststate

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/cowmap"
)

// Op is what an Update does.
type Op uint8

// Update operations.
const (
	// Put replaces the host's whole record. Ordered by the host's Seq.
	Put Op = iota + 1
	// Delete removes the host's records. Ordered by Seq when the host itself
	// deregistered; Seq 0 is a removal decided by the control plane (a member
	// reaped or gone), which has no host seq to carry and always applies.
	Delete
	// Failed marks the host's member as failed: its records stop being
	// served but are kept, so Alive can bring them back. Time is the HLC
	// time of the decision.
	Failed
	// Alive clears Failed.
	Alive
)

func (o Op) String() string {
	switch o {
	case Put:
		return "put"
	case Delete:
		return "delete"
	case Failed:
		return "failed"
	case Alive:
		return "alive"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Update is one change to one host, from either path.
type Update struct {
	Op   Op
	Host string
	// Record is the host's new record (Put only). Its own Seq, Time and
	// Failed fields are ignored: the Update's fields are the ones that count.
	Record *Host
	// Seq is the host's sequence number for this change (Put, Delete).
	Seq uint64
	// Time is the HLC timestamp of the change: the host's for Put and
	// Delete, the control-plane leader's for Failed and Alive (the event
	// id's timestamp). A Failed without it loses to any stamped record.
	Time hlc.Timestamp
	// Revision is the control-plane revision the update was read at; 0 when
	// it came on the fast path.
	Revision uint64
}

// ErrInvalid is wrapped by errors for updates that cannot be applied.
var ErrInvalid = errors.New("hoststate: invalid update")

// Bootstrap is a full view of all hosts at a control-plane revision: what a
// new dns processor starts from (read from the control plane, or handed over
// by a peer dns processor as Snapshot.Bootstrap).
type Bootstrap struct {
	Revision uint64
	// Hosts are the host records, each with its Seq and Time.
	Hosts []Host
	// Removed holds the seq of each host that removed itself, so a stale
	// update for it is still dropped after the bootstrap.
	Removed map[string]uint64
	// Failed holds the hosts whose member is failed and the HLC time of that
	// decision. Hosts not in it are alive.
	Failed map[string]hlc.Timestamp
	// Reset drops everything held before (a new cluster epoch) instead of
	// merging by seq.
	Reset bool
}

// entry is what the state holds per host. Entries are values inside
// snapshots, so they are never changed in place: a change stores a new one.
type entry struct {
	rec      *Host // nil once removed; the seq stays, as a tombstone
	seq      uint64
	failed   bool
	failedAt hlc.Timestamp
	shown    *Host // what readers see: rec with Failed set, nil when none
}

// show sets e.shown from its other fields.
func (e *entry) show() {
	switch {
	case e.rec == nil:
		e.shown = nil
	case e.rec.Failed == e.failed:
		e.shown = e.rec
	default:
		c := *e.rec // fields are shared; records are never changed in place
		c.Failed = e.failed
		e.shown = &c
	}
}

// maxLog bounds the change log kept for Snapshot.Changed: a processor
// further behind than this rebuilds from the whole snapshot.
const maxLog = 1 << 14

// State is the set of hosts a dns processor serves. It is safe for
// concurrent use: writers are serialised, readers load snapshots.
type State struct {
	mu       sync.Mutex
	revision uint64        // highest control-plane revision applied or dropped
	notify   chan struct{} // closed when a newer snapshot is published
	cur      atomic.Pointer[Snapshot]
}

// New returns an empty state at revision 0.
func New() *State {
	s := &State{notify: make(chan struct{})}
	s.cur.Store(&Snapshot{src: s})
	return s
}

// Snapshot is the current snapshot. It never blocks on writers.
func (s *State) Snapshot() *Snapshot { return s.cur.Load() }

// Watch returns the current snapshot and a channel that is closed once a
// newer one is published. Processors loop on it.
func (s *State) Watch() (*Snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.Load(), s.notify
}

// Revision is the highest control-plane revision applied, counting updates
// that were dropped as stale: it is where a watch resumes.
func (s *State) Revision() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revision
}

// Advance records that the control plane's history has been read up to
// rev without a change to any host (events about other keys, progress
// notifications), so a watch resumes after it. It publishes nothing: the
// served records, and the SOA serial, stay as they are.
func (s *State) Advance(rev uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revision = max(s.revision, rev)
}

// Apply applies u if it is newer than what is held for its host and
// reports whether the served records changed. Stale updates are dropped
// without error.
func (s *State) Apply(u Update) (bool, error) {
	name := strings.ToLower(u.Host)
	if name == "" {
		return false, fmt.Errorf("%w: no host name", ErrInvalid)
	}
	if u.Op == Put && u.Record == nil {
		return false, fmt.Errorf("%w: put for %q without a record", ErrInvalid, name)
	}
	if u.Op < Put || u.Op > Alive {
		return false, fmt.Errorf("%w: %v", ErrInvalid, u.Op)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.revision = max(s.revision, u.Revision)
	cur := s.cur.Load()
	e, _ := cur.hosts.Get(name)
	if !e.apply(name, u) {
		return false, nil
	}
	ed := cur.hosts.Edit()
	ed.Set(name, e)
	s.publish(cur, ed, []string{name})
	return true, nil
}

// apply changes e by u and reports whether anything in e changed.
func (e *entry) apply(name string, u Update) bool {
	switch u.Op {
	case Put:
		if u.Seq <= e.seq {
			return false
		}
		r := u.Record.clone()
		r.Name, r.Seq, r.Time, r.Failed = name, u.Seq, u.Time, false
		e.rec, e.seq = r, u.Seq
		// A record the host stamped after the failure decision proves the
		// host came back before the control plane said so.
		if e.failed && u.Time > e.failedAt {
			e.failed = false
		}
		e.show()
		return true
	case Delete:
		if u.Seq != 0 && u.Seq <= e.seq {
			return false
		}
		if e.rec == nil && u.Seq <= e.seq {
			return false // nothing left to remove
		}
		e.rec, e.seq = nil, max(e.seq, u.Seq)
		e.show()
		return true
	case Failed:
		if e.failed && e.failedAt >= u.Time {
			return false
		}
		if e.rec != nil && e.rec.Time > u.Time {
			return false // the host spoke after the decision
		}
		e.failed, e.failedAt = true, u.Time
		e.show()
		return true
	case Alive:
		if !e.failed {
			return false
		}
		e.failed = false
		e.show()
		return true
	}
	return false
}

// Restore merges a full view into the state (or replaces it, with Reset)
// and publishes the result at the view's revision. Per host the newer seq
// wins, as for Apply; hosts the view does not mention are kept, because a
// fresher update may have reached this processor on the fast path only.
func (s *State) Restore(b Bootstrap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.Load()
	base := cur.hosts
	if b.Reset {
		base = cowmap.Map[entry]{}
	}
	ed := base.Edit()
	changed := map[string]bool{}
	set := func(name string, u Update) {
		e, _ := ed.Get(name)
		if e.apply(name, u) {
			ed.Set(name, e)
			changed[name] = true
		}
	}
	for i := range b.Hosts {
		h := &b.Hosts[i]
		if name := strings.ToLower(h.Name); name != "" {
			set(name, Update{Op: Put, Record: h, Seq: h.Seq, Time: h.Time})
		}
	}
	for name, seq := range b.Removed {
		if name = strings.ToLower(name); seq != 0 {
			set(name, Update{Op: Delete, Seq: seq})
		}
	}
	failed := make(map[string]hlc.Timestamp, len(b.Failed))
	for name, at := range b.Failed {
		name = strings.ToLower(name)
		failed[name] = at
		if _, ok := ed.Get(name); !ok {
			ed.Set(name, entry{})
		}
	}
	// The view's failed set replaces the held one: every entry is visited.
	var alive []string
	for name, e := range ed.All() {
		if _, ok := failed[name]; !ok && e.failed {
			alive = append(alive, name)
		}
	}
	for _, name := range alive {
		e, _ := ed.Get(name)
		e.failed, e.failedAt = false, 0
		e.show()
		ed.Set(name, e)
		changed[name] = true
	}
	for name, at := range failed {
		set(name, Update{Op: Failed, Time: at})
	}
	s.revision = b.Revision
	if b.Reset {
		s.publish(cur, ed, nil) // a new epoch: everything may differ
		return
	}
	// A view that repeats what is held (a watch resumed by bootstrapping
	// again) changes few hosts or none: processors update only those.
	names := make([]string, 0, len(changed))
	for name := range changed {
		names = append(names, name)
	}
	s.publish(cur, ed, names)
}

// publish makes the edited hosts the next snapshot and wakes watchers.
// changed names the hosts that changed, nil when any may have.
func (s *State) publish(cur *Snapshot, ed *cowmap.Edit[entry], changed []string) {
	next := &Snapshot{
		Revision: s.revision,
		Version:  cur.Version + 1,
		src:      s,
		hosts:    ed.Map(),
		logBase:  cur.logBase,
		log:      append(cur.log, changed),
	}
	if changed == nil {
		for _, e := range next.hosts.All() {
			if e.shown != nil {
				next.shown++
			}
		}
	} else {
		next.shown = cur.shown
		for _, name := range changed {
			was, _ := cur.hosts.Get(name)
			now, _ := next.hosts.Get(name)
			if was.shown != nil {
				next.shown--
			}
			if now.shown != nil {
				next.shown++
			}
		}
	}
	if len(next.log) > maxLog {
		// Start a new log with the newer half: the old array stays with
		// the snapshots that share it.
		keep := maxLog / 2
		drop := len(next.log) - keep
		next.log = append([][]string(nil), next.log[drop:]...)
		next.logBase += uint64(drop)
	}
	s.cur.Store(next)
	close(s.notify)
	s.notify = make(chan struct{})
}
