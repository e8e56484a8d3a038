package hoststate

import (
	"iter"
	"slices"
	"strings"

	"github.com/hivemind/hivemind/pkg/hlc"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/cowmap"
)

// Snapshot is an immutable view of the state. Everything reachable from it
// is shared with other readers and must not be modified. A snapshot shares
// all but the changed host's part with the one before it, so publishing
// one costs the same whatever the number of hosts.
type Snapshot struct {
	// Revision is the control-plane revision the state had applied when this
	// snapshot was published. Changes that came on the fast path only do not
	// move it until the durable path delivers them.
	Revision uint64
	// Version counts the snapshots this State published; it tells a
	// processor whether it has already seen this one.
	Version uint64

	src   *State
	hosts cowmap.Map[entry] // every host ever seen, removed ones too
	shown int               // hosts with a record

	// log[i] names the hosts changed by version logBase+1+i, nil when
	// any may have (a Restore of a new epoch).
	log     [][]string
	logBase uint64
}

// Hosts lists the hosts with a record, sorted by name, failed ones
// included (Host.Failed tells them apart). It costs a sort of every
// host: what needs no order takes All.
func (s *Snapshot) Hosts() []*Host {
	hosts := make([]*Host, 0, s.shown)
	for h := range s.All() {
		hosts = append(hosts, h)
	}
	slices.SortFunc(hosts, func(a, b *Host) int { return strings.Compare(a.Name, b.Name) })
	return hosts
}

// All iterates over the hosts with a record, failed ones included, in no
// particular order.
func (s *Snapshot) All() iter.Seq[*Host] {
	return func(yield func(*Host) bool) {
		for _, e := range s.hosts.All() {
			if e.shown != nil && !yield(e.shown) {
				return
			}
		}
	}
}

// Host returns the record of the named host (lower case).
func (s *Snapshot) Host(name string) (*Host, bool) {
	e, _ := s.hosts.Get(name)
	return e.shown, e.shown != nil
}

// Len is the number of hosts with a record.
func (s *Snapshot) Len() int { return s.shown }

// Seq is the highest seq held for the named host, 0 if none.
func (s *Snapshot) Seq(name string) uint64 {
	e, _ := s.hosts.Get(name)
	return e.seq
}

// Changed names the hosts whose records changed (were put, removed, failed
// or recovered) between since and s, each once; false when that is not
// known and the whole of s must be taken instead: since is nil, from
// another State, newer than s, older than the log kept, or a Restore with
// Reset came in between. The slice may be shared: callers only read it.
func (s *Snapshot) Changed(since *Snapshot) ([]string, bool) {
	if since == nil || since.src != s.src || since.Version > s.Version || since.Version < s.logBase {
		return nil, false
	}
	log := s.log[since.Version-s.logBase:]
	if len(log) == 1 && log[0] != nil {
		return log[0], true // the common case: one version, nothing to sort out
	}
	seen := map[string]bool{}
	var out []string
	for _, names := range log {
		if names == nil {
			return nil, false
		}
		for _, name := range names {
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out, true
}

// Bootstrap returns the snapshot as a full view a peer dns processor can
// start from when the control plane is unavailable.
func (s *Snapshot) Bootstrap() Bootstrap {
	b := Bootstrap{
		Revision: s.Revision,
		Hosts:    make([]Host, 0, s.shown),
		Removed:  map[string]uint64{},
		Failed:   map[string]hlc.Timestamp{},
	}
	for name, e := range s.hosts.All() {
		if e.failed {
			b.Failed[name] = e.failedAt
		}
		switch {
		case e.shown != nil:
			b.Hosts = append(b.Hosts, *e.shown.clone())
		case e.seq > 0:
			b.Removed[name] = e.seq
		}
	}
	slices.SortFunc(b.Hosts, func(x, y Host) int { return strings.Compare(x.Name, y.Name) })
	return b
}
