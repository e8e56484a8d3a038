package raftnode

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
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
	s, err := OpenStorage(dir)
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
	if err := s.SaveSnapshot(snap, 4); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = OpenStorage(dir)
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
