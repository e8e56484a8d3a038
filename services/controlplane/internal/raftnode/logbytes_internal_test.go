package raftnode

import (
	"bytes"
	"context"
	"math"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// logBytes is the entry data the member holds in its raft log.
func logBytes(t *testing.T, n *Node) uint64 {
	t.Helper()
	first, _ := n.storage.Raft().FirstIndex()
	last, _ := n.storage.Raft().LastIndex()
	if last < first {
		return 0
	}
	ents, err := n.storage.Raft().Entries(first, last+1, math.MaxUint64)
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, e := range ents {
		sum += uint64(len(e.GetData()))
	}
	return sum
}

// Large entries are snapshotted and compacted away by their bytes, long
// before the entry counts would have it: 200 appends of 32 KiB leave at
// most SnapshotEveryBytes plus SnapshotMarginBytes (and an entry or two)
// in the log once the last snapshot is written, where the counts alone
// would have kept all 6.4 MiB.
func TestLogIsBoundedInBytes(t *testing.T) {
	net := NewMemNetwork()
	cfg := TestConfig(1, t.TempDir(), []*hivemindv1.Member{{Id: 1, Name: "n1", PeerAddress: "mem-1"}})
	cfg.SnapshotEvery, cfg.SnapshotMargin = 1_000_000, 1_000_000
	cfg.SnapshotEveryBytes, cfg.SnapshotMarginBytes = 512<<10, 256<<10
	cfg.Transport = net.Transport(1)
	n, err := New(cfg, &listSM{})
	if err != nil {
		t.Fatal(err)
	}
	net.Attach(1, n)
	n.Start()
	defer n.Stop(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for !n.IsLeader() {
		select {
		case <-ctx.Done():
			t.Fatal("no leader")
		case <-time.After(5 * time.Millisecond):
		}
	}
	const entry = 32 << 10
	for i := range 200 {
		data := bytes.Repeat([]byte{byte(i)}, entry)
		data[0], data[1] = byte(i>>8), byte(i)
		if _, err := n.Propose(ctx, data, nil); err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
	}
	bound := cfg.SnapshotEveryBytes + cfg.SnapshotMarginBytes + 2*entry
	settled := time.After(30 * time.Second)
	for logBytes(t, n) > bound {
		select {
		case <-settled:
			t.Fatalf("the log holds %d bytes of entries, want at most %d", logBytes(t, n), bound)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if first, _ := n.storage.Raft().FirstIndex(); first < 150 {
		t.Fatalf("the log starts at %d: it was hardly compacted", first)
	}
}
