package backup

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/atomicfile"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
	"github.com/hivemind/hivemind/services/controlplane/internal/replica"
)

// RestoreConfig says where and as whom a snapshot file is restored.
type RestoreConfig struct {
	// File is the snapshot file.
	File string
	// RaftDir is the member's raft data directory (<data-dir>/raft); it
	// must not exist or be empty.
	RaftDir string
	// Name of the member being prepared; it must be one of Cluster.
	Name string
	// Cluster is the new cluster's members (name and addresses), as
	// --initial-cluster gives them. Ids are derived from the names.
	Cluster []*hivemindv1.Member
	// FSM bounds the state machine that checks the state (the same bounds
	// the members will run with).
	FSM fsm.Config
}

// Restored describes a prepared data directory.
type Restored struct {
	Header    *hivemindv1.SnapshotHeader
	ClusterID uint64
	Epoch     uint64
}

// Restore prepares RaftDir for one member of a new cluster holding the
// state of the snapshot file, as etcdutl snapshot restore does. The new
// cluster has a cluster id of its own (members of the old cluster are
// refused by it) and the next epoch (nodes of the old cluster bootstrap
// again instead of mixing histories). Run it for every member of the new
// cluster with the same file and cluster; each then starts with the same
// --initial-cluster. The file is checked whole first, and a refused file
// writes nothing.
func Restore(cfg RestoreConfig) (*Restored, error) {
	members, err := clusterMembers(cfg.Cluster, cfg.Name)
	if err != nil {
		return nil, err
	}
	if err := emptyDir(cfg.RaftDir); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(cfg.File)
	if err != nil {
		return nil, err
	}
	hdr, snap, err := Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	snap.Epoch = max(snap.GetEpoch(), 1) + 1
	// The control-plane members start with new data directories and
	// possibly new node keys: their names are bound again at their first
	// join.
	if err := unbindNames(snap, members); err != nil {
		return nil, err
	}
	state, err := checkedState(snap, cfg.FSM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	sum := sha256.Sum256(raw)
	id := newClusterID(members, sum[:])
	if err := raftnode.Bootstrap(cfg.RaftDir, id, members, state); err != nil {
		return nil, err
	}
	return &Restored{Header: hdr, ClusterID: id, Epoch: snap.GetEpoch()}, nil
}

// checkedState encodes snap after a state machine has accepted it, so that
// a state that contradicts itself is refused before anything is written.
func checkedState(snap *raftv1.Snapshot, cfg fsm.Config) ([]byte, error) {
	if err := fsm.New(cfg).Restore(snap); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDamaged, err)
	}
	return snap.MarshalVT()
}

// unbindNames clears the key binding of the registry entries named like
// the control-plane members.
func unbindNames(snap *raftv1.Snapshot, members []*hivemindv1.Member) error {
	for i, kv := range snap.GetKvs() {
		name := registry.NameOf(kv.GetKey())
		if name == "" || !slices.ContainsFunc(members, func(m *hivemindv1.Member) bool { return m.GetName() == name }) {
			continue
		}
		mem, err := registry.Decode(kv.GetValue())
		if err != nil {
			return fmt.Errorf("%w: member record %s: %v", ErrDamaged, kv.GetKey(), err)
		}
		mem.PublicKey = nil
		kv = proto.Clone(kv).(*hivemindv1.KeyValue)
		kv.Value = registry.Encode(mem)
		snap.Kvs[i] = kv
	}
	return nil
}

// clusterMembers gives the members their ids and checks that name is one
// of them.
func clusterMembers(cluster []*hivemindv1.Member, name string) ([]*hivemindv1.Member, error) {
	if len(cluster) == 0 {
		return nil, errors.New("--initial-cluster: empty; name the new cluster's members")
	}
	var out []*hivemindv1.Member
	found := false
	seen := map[string]bool{}
	for _, m := range cluster {
		if seen[m.GetName()] {
			return nil, fmt.Errorf("--initial-cluster: %q appears twice", m.GetName())
		}
		seen[m.GetName()] = true
		m = proto.Clone(m).(*hivemindv1.Member)
		m.Id = replica.MemberID(m.GetName())
		out = append(out, m)
		found = found || m.GetName() == name
	}
	if !found {
		return nil, fmt.Errorf("--node-name: %q is not in --initial-cluster", name)
	}
	return out, nil
}

// emptyDir refuses a directory that holds anything: restoring over a
// member's data would mix two histories.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			sub, err := os.ReadDir(filepath.Join(dir, e.Name()))
			if err == nil && len(sub) == 0 {
				continue // an empty wal/ or snap/ left by a member that never ran
			}
		}
		return fmt.Errorf("%s is not empty (it holds %s): restore prepares a new member's directory; move the old one away first", dir, e.Name())
	}
	return nil
}

// newClusterID derives the new cluster's id from its members and the
// bytes it starts from, so that every member prepared with the same
// arguments agrees on it.
func newClusterID(members []*hivemindv1.Member, salt []byte) uint64 {
	ids := make([]uint64, 0, len(members))
	for _, m := range members {
		ids = append(ids, m.GetId())
	}
	slices.Sort(ids)
	h := fnv.New64a()
	for _, id := range ids {
		h.Write(binary.BigEndian.AppendUint64(nil, id))
	}
	h.Write(salt)
	return max(h.Sum64(), 1)
}

// RecoverConfig says which member's data becomes a one-member cluster.
type RecoverConfig struct {
	// RaftDir is the surviving member's raft data directory.
	RaftDir string
	// Name of the surviving member.
	Name string
	// Force recovers even when other members answer.
	Force bool
	// DialTimeout bounds the check that the other members are gone.
	// Default 2s.
	DialTimeout time.Duration
	FSM         fsm.Config
}

// Recovered describes a recovered data directory.
type Recovered struct {
	// Revision of the state kept; Last the raft index replayed up to.
	Revision  int64
	Last      uint64
	ClusterID uint64
	// Saved is where the directory's previous contents were moved.
	Saved string
	// Reachable are the other members that answered (only with Force).
	Reachable []string
}

// ErrMembersReachable is returned when other members still answer: a
// one-member cluster next to a running one would split the cluster in two.
var ErrMembersReachable = errors.New("other members are reachable")

// Recover turns a surviving member's data directory into the data of a
// one-member cluster holding everything in its log (see raftnode.Replay),
// with a new cluster id so that the lost members, should they come back,
// are refused. The epoch is kept: no history is dropped, so hosts and dns
// processors carry on. The old contents are moved aside, not deleted.
// Other members are added afterwards the usual way (MemberAdd, then start
// them with --join).
func Recover(ctx context.Context, cfg RecoverConfig) (*Recovered, error) {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	m := fsm.New(cfg.FSM)
	rp, err := raftnode.Replay(cfg.RaftDir, replica.StateMachine(m))
	if err != nil {
		return nil, err
	}
	id := replica.MemberID(cfg.Name)
	var self *hivemindv1.Member
	var others []*hivemindv1.Member
	for _, mem := range rp.Members {
		if mem.GetId() == id {
			self = proto.Clone(mem).(*hivemindv1.Member)
		} else {
			others = append(others, mem)
		}
	}
	if self == nil {
		return nil, fmt.Errorf("--node-name: %q is not a member in %s's log", cfg.Name, cfg.RaftDir)
	}
	self.Learner = false
	if self.GetName() == "" {
		self.Name = cfg.Name
	}
	reachable := reachableMembers(ctx, others, cfg.DialTimeout)
	if len(reachable) > 0 && !cfg.Force {
		return nil, fmt.Errorf("%w: %v answer; recover only when they are gone for good (or pass --force)", ErrMembersReachable, reachable)
	}
	state, err := m.Snapshot().MarshalVT()
	if err != nil {
		return nil, err
	}
	salt := binary.BigEndian.AppendUint64(nil, rp.ClusterID)
	salt = binary.BigEndian.AppendUint64(salt, rp.Last)
	salt = append(salt, "recover"...)
	cid := newClusterID([]*hivemindv1.Member{self}, salt)
	dir := filepath.Clean(cfg.RaftDir)
	tmp := dir + ".recover-tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	if err := raftnode.Bootstrap(tmp, cid, []*hivemindv1.Member{self}, state); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	saved := fmt.Sprintf("%s.before-recover-%d", dir, time.Now().Unix())
	if err := os.Rename(dir, saved); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, errors.Join(err, os.Rename(saved, dir))
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	return &Recovered{Revision: m.Revision(), Last: rp.Last, ClusterID: cid, Saved: saved, Reachable: reachable}, nil
}

// reachableMembers names the members whose raft address accepts a
// connection.
func reachableMembers(ctx context.Context, members []*hivemindv1.Member, timeout time.Duration) []string {
	var out []string
	for _, mem := range members {
		addr := mem.GetPeerAddress()
		if addr == "" {
			continue
		}
		d := net.Dialer{Timeout: timeout}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			out = append(out, fmt.Sprintf("%s (%s)", mem.GetName(), addr))
		}
	}
	return out
}
