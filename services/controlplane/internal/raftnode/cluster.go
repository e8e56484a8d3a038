package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hivemind/hivemind/pkg/atomicfile"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// A cluster id tells apart raft clusters whose members happen to share ids
// (the same names, say). Every raft stream carries the sender's cluster id,
// and a member refuses messages from another cluster: obeying a leader of a
// different cluster would corrupt its log. The id is derived from the
// initial members when a cluster is bootstrapped; a member that joins later
// adopts the id of the first cluster that contacts it. It is kept in a file
// beside the log.

// clusterIDKey is the gRPC metadata key carrying the sender's cluster id.
const clusterIDKey = "hivemind-cluster-id"

// ErrOtherCluster is returned for raft traffic from a different cluster.
var ErrOtherCluster = errors.New("raft message from another cluster")

func clusterIDFor(peers []*hivemindv1.Member) uint64 {
	ids := make([]uint64, 0, len(peers))
	for _, m := range peers {
		ids = append(ids, m.GetId())
	}
	slices.Sort(ids)
	h := fnv.New64a()
	var b [8]byte
	for _, id := range ids {
		binary.BigEndian.PutUint64(b[:], id)
		h.Write(b[:])
	}
	return max(h.Sum64(), 1)
}

func (n *Node) clusterIDPath() string { return filepath.Join(n.cfg.DataDir, "cluster-id") }

// The cluster id file's kind and format version: version 1 was the bare
// hexadecimal id, version 2 adds the header line.
const (
	clusterIDKind    = "hivemind-cluster-id"
	clusterIDVersion = 2
)

func (n *Node) loadClusterID() error {
	_, b, err := atomicfile.ReadVersioned(n.clusterIDPath(), clusterIDKind, 1, clusterIDVersion)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raftnode: cluster id: %w", err)
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64)
	if err != nil {
		return fmt.Errorf("raftnode: cluster id file %s: %w", n.clusterIDPath(), err)
	}
	n.clusterID.Store(id)
	return nil
}

func (n *Node) saveClusterID(id uint64) error {
	body := []byte(strconv.FormatUint(id, 16) + "\n")
	if err := atomicfile.WriteVersioned(n.clusterIDPath(), clusterIDKind, clusterIDVersion, body, 0o600); err != nil {
		return fmt.Errorf("raftnode: cluster id: %w", err)
	}
	n.clusterID.Store(id)
	return nil
}

// ClusterID is this member's cluster id (0 while a joining member has not
// been contacted yet).
func (n *Node) ClusterID() uint64 { return n.clusterID.Load() }

// acceptCluster decides whether raft traffic stamped with the sender's
// cluster id may be stepped into this member.
func (n *Node) acceptCluster(theirs uint64) error {
	if theirs == 0 {
		return nil
	}
	n.clusterMu.Lock()
	defer n.clusterMu.Unlock()
	ours := n.clusterID.Load()
	if ours == 0 {
		return n.saveClusterID(theirs)
	}
	if ours != theirs {
		return fmt.Errorf("%w: sender is in cluster %x, this member in %x", ErrOtherCluster, theirs, ours)
	}
	return nil
}
