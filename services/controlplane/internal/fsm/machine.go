package fsm

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	"github.com/google/btree"
	"google.golang.org/grpc/codes"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hlc"
)

// Config sets the machine's bounds. Zero values take the defaults.
type Config struct {
	// MaxRevisions of the event log kept before the oldest are dropped.
	// Default 100,000.
	MaxRevisions int64
	// MaxHistoryBytes bounds the encoded size of the events kept; beyond
	// it the oldest revisions are dropped whole (the latest one is always
	// kept). Default 256 MiB.
	MaxHistoryBytes int64
	// IdempotencyWindow is how many idempotency keys are remembered.
	// Default 10,000.
	IdempotencyWindow int
}

// TestConfig is a preset with small bounds, so tests reach them quickly.
func TestConfig() Config { return Config{MaxRevisions: 50, IdempotencyWindow: 8} }

// DefaultMaxHistoryBytes is the history size kept when Config sets none.
const DefaultMaxHistoryBytes = 256 << 20

// ErrCompacted is returned for history older than the oldest retained
// revision.
var ErrCompacted = errors.New("compacted")

// NodesPrefix is the part of the tree owned by nodes, where the writer's
// HLC timestamp decides (last writer wins).
const NodesPrefix = "/nodes/"

// Machine is the state machine. Apply must be called from one goroutine at
// a time (the raft apply loop); reads may run concurrently with it. Stored
// protobuf messages are never modified after they are stored: a change
// stores a new message, so readers may keep what they were given.
type Machine struct {
	cfg Config

	mu      sync.RWMutex
	rev     int64
	epoch   uint64
	oldest  int64 // oldest revision retained in the event log
	lastHLC uint64
	kvs     *btree.BTreeG[*hivemindv1.KeyValue]
	events  []*hivemindv1.Event
	// historyBytes is the encoded size of events (see eventBytes).
	historyBytes int64
	intents      map[string]*hivemindv1.Intent
	applied      map[string]*raftv1.Result
	order        []string // idempotency keys, a ring starting at head
	head         int
}

// New returns an empty machine.
func New(cfg Config) *Machine {
	if cfg.MaxRevisions <= 0 {
		cfg.MaxRevisions = 100_000
	}
	if cfg.MaxHistoryBytes <= 0 {
		cfg.MaxHistoryBytes = DefaultMaxHistoryBytes
	}
	if cfg.IdempotencyWindow <= 0 {
		cfg.IdempotencyWindow = 10_000
	}
	m := &Machine{cfg: cfg}
	m.reset()
	return m
}

func (m *Machine) reset() {
	m.rev, m.epoch, m.oldest, m.lastHLC = 0, 1, 1, 0
	m.kvs = btree.NewG(32, func(a, b *hivemindv1.KeyValue) bool { return a.Key < b.Key })
	m.events, m.historyBytes = nil, 0
	m.intents = map[string]*hivemindv1.Intent{}
	m.applied = map[string]*raftv1.Result{}
	m.order, m.head = nil, 0
}

// change collects what one command does before it is committed to the
// machine's revision.
type change struct {
	m      *Machine
	rev    int64 // the revision this command's events get
	ts     hlc.Timestamp
	last   hlc.Timestamp // the latest timestamp an event id used
	node   string        // whose hash goes into event ids
	source string
	events []*hivemindv1.Event
}

// emit stamps e as the next event of the command. An id's sequence number
// has 16 bits; a command with more events than that (a prefix delete of a
// large subtree) moves on to the next logical tick every 65,536 events, so
// ids stay unique and ordered. Apply then keeps the clock past that tick.
func (c *change) emit(e *hivemindv1.Event) {
	n := len(c.events)
	c.last = c.ts + hlc.Timestamp(n>>16)
	e.Revision = c.rev
	e.Id = hlc.NewID(c.last, c.node, uint16(n)).String()
	e.Time = timestamp(c.ts.Physical())
	if e.Source == "" {
		e.Source = c.source
	}
	c.events = append(c.events, e)
}

// Apply applies one command and returns its result and the events it
// produced (nil when nothing changed). A rejected command changes nothing
// and says why in the result's code and message.
//
// The result and events are shared with the machine (the idempotency
// window, the event log) and must not be modified.
func (m *Machine) Apply(cmd *raftv1.Command) (*raftv1.Result, []*hivemindv1.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()

	key := cmd.GetIdempotencyKey()
	if key != "" {
		if res, ok := m.applied[key]; ok {
			return res, nil
		}
	}
	ts := hlc.Timestamp(max(cmd.GetHlc(), m.lastHLC+1))
	if m.lastHLC == math.MaxUint64 {
		// Only a corrupt stamp gets here; stay put rather than wrap to 0.
		ts = hlc.Timestamp(m.lastHLC)
	}
	source := cmd.GetSource()
	if source == "" {
		source = cmd.GetProposer()
	}
	node := cmd.GetProposer()
	if node == "" {
		node = source
	}
	c := &change{m: m, rev: m.rev + 1, ts: ts, last: ts, node: node, source: source}

	var res *raftv1.Result
	if err := ValidateCommand(cmd); err != nil {
		res = rejected(err)
	} else {
		res = m.dispatch(c, cmd)
	}
	m.lastHLC = uint64(c.last)
	if len(c.events) > 0 {
		m.rev = c.rev
		m.events = append(m.events, c.events...)
		for _, e := range c.events {
			m.historyBytes += eventBytes(e)
		}
		m.retain()
	}
	res.Revision = m.rev
	// Rejections are remembered too: a retry gets the first answer, even if
	// the state has since changed so that it would now succeed.
	if key != "" && len(key) <= MaxIdempotencyKeyBytes {
		m.remember(key, res)
	}
	return res, c.events
}

// Rejected is the result of a command refused before it was proposed, in
// the form a rejection applied by the machine takes.
func Rejected(err error) *raftv1.Result { return rejected(err) }

func rejected(err error) *raftv1.Result {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &raftv1.Result{Code: int32(fe.Code), Message: fe.Error()}
	}
	return &raftv1.Result{Code: int32(codes.FailedPrecondition), Message: err.Error()}
}

func (m *Machine) dispatch(c *change, cmd *raftv1.Command) *raftv1.Result {
	switch op := cmd.GetOp().(type) {
	case *raftv1.Command_Put:
		return &raftv1.Result{Response: &raftv1.Result_Put{Put: m.applyPut(c, op.Put)}}
	case *raftv1.Command_Delete:
		return &raftv1.Result{Response: &raftv1.Result_Delete{Delete: m.applyDelete(c, op.Delete)}}
	case *raftv1.Command_Txn:
		return &raftv1.Result{Response: &raftv1.Result_Txn{Txn: m.applyTxn(c, op.Txn)}}
	case *raftv1.Command_AppendEvent:
		return &raftv1.Result{Response: &raftv1.Result_AppendEvent{AppendEvent: m.applyAppend(c, op.AppendEvent)}}
	case *raftv1.Command_ClaimIntent:
		return &raftv1.Result{Response: &raftv1.Result_ClaimIntent{ClaimIntent: m.applyClaim(c, op.ClaimIntent)}}
	case *raftv1.Command_CompleteIntent:
		resp, err := m.applyComplete(c, op.CompleteIntent)
		if err != nil {
			return rejected(err)
		}
		return &raftv1.Result{Response: &raftv1.Result_CompleteIntent{CompleteIntent: resp}}
	case *raftv1.Command_ReleaseIntent:
		resp, err := m.applyRelease(c, op.ReleaseIntent)
		if err != nil {
			return rejected(err)
		}
		return &raftv1.Result{Response: &raftv1.Result_ReleaseIntent{ReleaseIntent: resp}}
	case *raftv1.Command_Compact:
		resp, err := m.applyCompact(c, op.Compact)
		if err != nil {
			return rejected(err)
		}
		return &raftv1.Result{Response: &raftv1.Result_Compact{Compact: resp}}
	case *raftv1.Command_LeaderChange:
		m.extendLeases(c.ts)
		return &raftv1.Result{}
	case *raftv1.Command_MemberJoin:
		return memberResult(m.applyMemberJoin(c, op.MemberJoin))
	case *raftv1.Command_MemberSetState:
		return memberResult(m.applyMemberSetState(c, op.MemberSetState))
	case *raftv1.Command_MemberLeave:
		return memberResult(m.applyMemberLeave(c, op.MemberLeave))
	}
	return rejected(invalid("op", "unknown operation"))
}

func memberResult(mem *hivemindv1.ClusterMember, err error) *raftv1.Result {
	if err != nil {
		return rejected(err)
	}
	return &raftv1.Result{Response: &raftv1.Result_Member{Member: mem}}
}

// header describes the state after the command being applied; the revision
// is the one the command commits at, or the current one if it changes
// nothing.
func (c *change) header() *hivemindv1.ResponseHeader {
	rev := c.m.rev
	if len(c.events) > 0 {
		rev = c.rev
	}
	return &hivemindv1.ResponseHeader{Revision: rev, Epoch: c.m.epoch}
}

// remember keeps res for key, forgetting the oldest key once the window is
// full. The order is a ring: head is the oldest entry once it has wrapped.
func (m *Machine) remember(key string, res *raftv1.Result) {
	m.applied[key] = res
	if len(m.order) < m.cfg.IdempotencyWindow {
		m.order = append(m.order, key)
		return
	}
	delete(m.applied, m.order[m.head])
	m.order[m.head] = key
	m.head = (m.head + 1) % len(m.order)
}

// window lists the remembered keys, oldest first.
func (m *Machine) window() []string {
	return append(append([]string(nil), m.order[m.head:]...), m.order[:m.head]...)
}

// retain drops the oldest revisions beyond MaxRevisions, then more of
// the oldest while the history is larger than MaxHistoryBytes, always
// whole revisions and never the latest. The decision depends only on the
// log and the configuration, so members configured alike drop alike.
func (m *Machine) retain() {
	if m.rev-m.oldest+1 > m.cfg.MaxRevisions {
		m.dropBefore(m.rev - m.cfg.MaxRevisions + 1)
	}
	if m.historyBytes <= m.cfg.MaxHistoryBytes {
		return
	}
	excess := m.historyBytes - m.cfg.MaxHistoryBytes
	i := 0
	for i < len(m.events) && excess > 0 && m.events[i].GetRevision() < m.rev {
		rev := m.events[i].GetRevision()
		for i < len(m.events) && m.events[i].GetRevision() == rev {
			excess -= eventBytes(m.events[i])
			i++
		}
	}
	if i > 0 {
		m.dropBefore(m.events[i].GetRevision())
	}
}

// eventBytes is what an event counts against MaxHistoryBytes: its encoded
// size, the bytes a watcher receives for it.
func eventBytes(e *hivemindv1.Event) int64 { return int64(e.SizeVT()) }

// dropBefore removes events with a revision below rev.
func (m *Machine) dropBefore(rev int64) {
	i := sort.Search(len(m.events), func(i int) bool { return m.events[i].GetRevision() >= rev })
	for _, e := range m.events[:i] {
		m.historyBytes -= eventBytes(e)
	}
	m.events = m.events[i:]
	// Copy once the dropped head is large, so its memory is released.
	if cap(m.events) > 2*len(m.events)+1024 {
		m.events = append([]*hivemindv1.Event(nil), m.events...)
	}
	m.oldest = rev
}

// HistoryBytes is the encoded size of the events the log retains.
func (m *Machine) HistoryBytes() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.historyBytes
}

// Revision is the latest applied revision.
func (m *Machine) Revision() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.rev
}

// Epoch is the cluster epoch.
func (m *Machine) Epoch() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.epoch
}

// OldestRevision is the oldest revision still in the event log.
func (m *Machine) OldestRevision() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.oldest
}

// Get returns a key and the revision the answer reflects.
func (m *Machine) Get(key string) (kv *hivemindv1.KeyValue, found bool, rev int64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	kv, found = m.kvs.Get(&hivemindv1.KeyValue{Key: key})
	return kv, found, m.rev
}

// Range returns up to limit keys starting with prefix, after startAfter, in
// key order; more says whether further keys follow.
func (m *Machine) Range(prefix, startAfter string, limit int, keysOnly bool) (kvs []*hivemindv1.KeyValue, more bool, rev int64) {
	return m.RangeHiding(prefix, startAfter, limit, keysOnly, nil)
}

// RangeHiding is Range as seen by a caller to whom the keys hidden reports
// do not exist: they are skipped and do not count towards limit, so that
// more still means that visible keys follow. A nil hidden hides nothing.
func (m *Machine) RangeHiding(prefix, startAfter string, limit int, keysOnly bool, hidden func(key string) bool) (kvs []*hivemindv1.KeyValue, more bool, rev int64) {
	if limit <= 0 {
		limit = DefaultRangeLimit
	}
	limit = min(limit, MaxRangeLimit)
	m.mu.RLock()
	defer m.mu.RUnlock()
	from := prefix
	if startAfter >= from {
		from = startAfter + "\x00"
	}
	m.kvs.AscendGreaterOrEqual(&hivemindv1.KeyValue{Key: from}, func(kv *hivemindv1.KeyValue) bool {
		if !strings.HasPrefix(kv.Key, prefix) {
			return false
		}
		if hidden != nil && hidden(kv.Key) {
			return true
		}
		if len(kvs) == limit {
			more = true
			return false
		}
		if keysOnly {
			kv = &hivemindv1.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Hlc: kv.Hlc}
		}
		kvs = append(kvs, kv)
		return true
	})
	return kvs, more, m.rev
}

// EventsFrom returns up to max retained events with revision >= rev, in
// order; max <= 0 means all of them. The last revision returned may be cut
// short by max. It fails with an error wrapping ErrCompacted, saying
// "compacted; oldest retained is N", when rev is older than the log retains.
func (m *Machine) EventsFrom(rev int64, max int) ([]*hivemindv1.Event, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if rev < m.oldest {
		return nil, fmt.Errorf("%w; oldest retained is %d", ErrCompacted, m.oldest)
	}
	i := sort.Search(len(m.events), func(i int) bool { return m.events[i].GetRevision() >= rev })
	j := len(m.events)
	if max > 0 {
		j = min(j, i+max)
	}
	return append([]*hivemindv1.Event(nil), m.events[i:j]...), nil
}

// Intent returns an intent by key.
func (m *Machine) Intent(key string) (*hivemindv1.Intent, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	in, ok := m.intents[key]
	return in, ok
}
