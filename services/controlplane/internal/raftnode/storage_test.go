package raftnode

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3/raftpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"google.golang.org/protobuf/proto"
)

func entries(from, n uint64, size int) []*raftpb.Entry {
	out := make([]*raftpb.Entry, n)
	for i := range out {
		out[i] = &raftpb.Entry{Index: proto.Uint64(from + uint64(i)), Term: proto.Uint64(1), Data: make([]byte, size)}
	}
	return out
}

func TestStorageSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := openStorage(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Fresh() {
		t.Fatal("new storage not fresh")
	}
	hs := &raftpb.HardState{Term: proto.Uint64(3), Vote: proto.Uint64(2), Commit: proto.Uint64(5)}
	if err := s.Save(hs, entries(1, 10, 8), nil, true); err != nil {
		t.Fatal(err)
	}
	// A new leader overwrites the uncommitted tail.
	tail := entries(8, 2, 8)
	for _, e := range tail {
		e.Term = proto.Uint64(4)
	}
	if err := s.Save(nil, tail, nil, true); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Raft().CreateSnapshot(5, &raftpb.ConfState{Voters: []uint64{1, 2, 3}}, []byte("state"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.writeSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.Compacted(4); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = openStorage(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	gotHS, _, _ := s.Raft().InitialState()
	if gotHS.GetTerm() != 3 || gotHS.GetCommit() != 5 {
		t.Fatalf("hard state %v", gotHS)
	}
	last, _ := s.Raft().LastIndex()
	first, _ := s.Raft().FirstIndex()
	if last != 9 || first != 6 {
		t.Fatalf("log is [%d, %d], want [6, 9] after the snapshot at 5 and the overwritten tail", first, last)
	}
	if term, _ := s.Raft().Term(9); term != 4 {
		t.Fatalf("entry 9 has term %d, want the overwriting term 4", term)
	}
	gotSnap, _ := s.Raft().Snapshot()
	if string(gotSnap.GetData()) != "state" || gotSnap.GetMetadata().GetIndex() != 5 {
		t.Fatalf("snapshot %v", gotSnap)
	}
}

// BenchmarkStorageSave measures fsync'd appends of 256-byte entries at
// several batch sizes (one Save per raft Ready).
func BenchmarkStorageSave(b *testing.B) {
	for _, batch := range []uint64{1, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, err := OpenStorage(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			next := uint64(1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ents := entries(next, batch, 256)
				next += batch
				hs := &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(next - 1)}
				if err := s.Save(hs, ents, nil, true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkBboltAppend is the alternative that was measured first: the
// same entries as keys of a bbolt bucket, one fsync'd transaction a batch.
func BenchmarkBboltAppend(b *testing.B) {
	for _, batch := range []uint64{1, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db, err := bolt.Open(filepath.Join(b.TempDir(), "raft.db"), 0o600, &bolt.Options{NoFreelistSync: true})
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			next := uint64(1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ents := entries(next, batch, 256)
				next += batch
				err := db.Update(func(tx *bolt.Tx) error {
					bk, err := tx.CreateBucketIfNotExists([]byte("entries"))
					if err != nil {
						return err
					}
					bk.FillPercent = 1.0
					for _, e := range ents {
						v, _ := proto.Marshal(e)
						var k [8]byte
						binary.BigEndian.PutUint64(k[:], e.GetIndex())
						if err := bk.Put(k[:], v); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

// BenchmarkRawLogAppend is the floor bbolt is compared with: appending the
// same marshalled entries to a plain file with one fdatasync per batch.
func BenchmarkRawLogAppend(b *testing.B) {
	for _, batch := range []uint64{1, 16, 128} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			next := uint64(1)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var buf []byte
				for _, e := range entries(next, batch, 256) {
					eb, _ := proto.Marshal(e)
					buf = append(buf, eb...)
				}
				next += batch
				if _, err := f.Write(buf); err != nil {
					b.Fatal(err)
				}
				if err := syscall.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)*float64(batch)/b.Elapsed().Seconds(), "entries/s")
		})
	}
}

func TestStorageRotatesAndRemovesOldSegments(t *testing.T) {
	const prealloc = 64 << 10
	dir := t.TempDir()
	s, err := openStorage(dir, prealloc)
	if err != nil {
		t.Fatal(err)
	}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(3)}
	if err := s.Save(hs, entries(1, 3, 8), nil, true); err != nil {
		t.Fatal(err)
	}
	// One entry larger than a segment: the file grows past its
	// preallocation, and the next write goes to a new segment.
	if err := s.Save(hs, entries(4, 1, 2*prealloc), nil, true); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)}, entries(5, 1, 8), nil, true); err != nil {
		t.Fatal(err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal")); len(segs) != 2 {
		t.Fatalf("%d segments, want 2", len(segs))
	}
	snap, err := s.Raft().CreateSnapshot(5, &raftpb.ConfState{Voters: []uint64{1}}, []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.writeSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.Compacted(5); err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("%d segments left, want 1", len(segs))
	}
	s.Close()
	s, err = openStorage(dir, prealloc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if hs, _, _ := s.Raft().InitialState(); hs.GetCommit() != 5 {
		t.Fatalf("hard state lost with the old segment: %v", hs)
	}
}

func TestClusterIDRefusesAnotherCluster(t *testing.T) {
	peers := []*hivemindv1.Member{{Id: 1, Name: "n1"}, {Id: 2, Name: "n2"}}
	dir := t.TempDir()
	cfg := TestConfig(1, dir, peers)
	cfg.Transport = NewMemNetwork().Transport(1)
	n, err := New(cfg, &listSM{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop(context.Background())
	ours := n.ClusterID()
	if ours == 0 || ours != clusterIDFor([]*hivemindv1.Member{{Id: 2}, {Id: 1}}) {
		t.Fatalf("cluster id %x not derived from the members", ours)
	}
	if err := n.acceptCluster(ours); err != nil {
		t.Fatalf("own cluster refused: %v", err)
	}
	if err := n.acceptCluster(ours + 1); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("another cluster accepted: %v", err)
	}

	// A joining member adopts the first cluster that contacts it, and keeps it.
	jdir := t.TempDir()
	jcfg := TestConfig(3, jdir, nil)
	jcfg.Join = true
	jcfg.Transport = NewMemNetwork().Transport(3)
	j, err := New(jcfg, &listSM{})
	if err != nil {
		t.Fatal(err)
	}
	if j.ClusterID() != 0 {
		t.Fatal("a joining member starts with a cluster id")
	}
	if err := j.acceptCluster(ours); err != nil {
		t.Fatal(err)
	}
	j.Stop(context.Background())
	j, err = New(jcfg, &listSM{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Stop(context.Background())
	if j.ClusterID() != ours || j.acceptCluster(ours+1) == nil {
		t.Fatal("the adopted cluster id was not kept across a restart")
	}
}

func TestClusterIDFileFormats(t *testing.T) {
	peers := []*hivemindv1.Member{{Id: 1, Name: "n1"}}
	dir := t.TempDir()
	path := filepath.Join(dir, "cluster-id")
	cfg := TestConfig(1, dir, peers)
	start := func() (*Node, error) {
		cfg.Transport = NewMemNetwork().Transport(1)
		return New(cfg, &listSM{})
	}
	n, err := start()
	if err != nil {
		t.Fatal(err)
	}
	id := n.ClusterID()
	n.Stop(context.Background())
	if b, _ := os.ReadFile(path); string(b) != fmt.Sprintf("hivemind-cluster-id 2\n%x\n", id) {
		t.Fatalf("cluster id file %q", b)
	}
	// Version 1, the bare id, is read.
	if err := os.WriteFile(path, []byte(fmt.Sprintf("%x\n", id)), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err = start()
	if err != nil {
		t.Fatal(err)
	}
	if n.ClusterID() != id {
		t.Fatalf("cluster id %x from a version 1 file, want %x", n.ClusterID(), id)
	}
	n.Stop(context.Background())
	// A newer version is refused, naming both.
	if err := os.WriteFile(path, []byte(fmt.Sprintf("hivemind-cluster-id 3\n%x\n", id)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := start(); err == nil || !strings.Contains(err.Error(), "version 3") || !strings.Contains(err.Error(), "up to 2") {
		t.Fatalf("newer cluster id file: %v", err)
	}
}
