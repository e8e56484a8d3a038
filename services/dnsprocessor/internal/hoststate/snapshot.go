package hoststate

import (
	"maps"

	"github.com/hivemind/hivemind/pkg/hlc"
)

// Snapshot is an immutable view of the state. Everything reachable from it
// is shared with other readers and must not be modified.
type Snapshot struct {
	// Revision is the control-plane revision the state had applied when this
	// snapshot was published. Changes that came on the fast path only do not
	// move it until the durable path delivers them.
	Revision uint64
	// Version counts the snapshots this State published; it tells a
	// processor whether it has already seen this one.
	Version uint64

	hosts  []*Host // sorted by name, failed hosts included
	byName map[string]*Host
	seqs   map[string]uint64 // every host ever seen, removed ones too
	failed map[string]hlc.Timestamp
}

// Hosts lists the hosts with a record, sorted by name, failed ones
// included (Host.Failed tells them apart).
func (s *Snapshot) Hosts() []*Host { return s.hosts }

// Host returns the record of the named host (lower case).
func (s *Snapshot) Host(name string) (*Host, bool) {
	h, ok := s.byName[name]
	return h, ok
}

// Len is the number of hosts with a record.
func (s *Snapshot) Len() int { return len(s.hosts) }

// Seq is the highest seq held for the named host, 0 if none.
func (s *Snapshot) Seq(name string) uint64 { return s.seqs[name] }

// Bootstrap returns the snapshot as a full view a peer dns processor can
// start from when the control plane is unavailable.
func (s *Snapshot) Bootstrap() Bootstrap {
	b := Bootstrap{
		Revision: s.Revision,
		Hosts:    make([]Host, 0, len(s.hosts)),
		Removed:  map[string]uint64{},
		Failed:   maps.Clone(s.failed),
	}
	for _, h := range s.hosts {
		b.Hosts = append(b.Hosts, *h.clone())
	}
	for name, seq := range s.seqs {
		if _, ok := s.byName[name]; !ok && seq > 0 {
			b.Removed[name] = seq
		}
	}
	return b
}
