package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Storage keeps a node's raft state on disk in one bbolt file: log entries,
// the hard state and the latest snapshot. Every Save is one bbolt
// transaction, committed with fsync before Save returns, so whatever raft is
// told is durable really is. Reads are served by an in-memory
// raft.MemoryStorage that mirrors the file and is loaded from it on start.
type Storage struct {
	db  *bolt.DB
	mem *raft.MemoryStorage
}

var (
	bucketEntries = []byte("entries")
	bucketMeta    = []byte("meta")
	keyHardState  = []byte("hardstate")
	keySnapshot   = []byte("snapshot")
)

// OpenStorage opens (or creates) the raft state under dir.
func OpenStorage(dir string) (*Storage, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("raft storage: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "raft.db"), 0o600, &bolt.Options{NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("raft storage: open: %w", err)
	}
	s := &Storage{db: db, mem: raft.NewMemoryStorage()}
	if err := s.load(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func idxKey(i uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], i)
	return b[:]
}

func (s *Storage) load() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		ents, err := tx.CreateBucketIfNotExists(bucketEntries)
		if err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if b := meta.Get(keySnapshot); b != nil {
			snap := &raftpb.Snapshot{}
			if err := proto.Unmarshal(b, snap); err != nil {
				return fmt.Errorf("raft storage: snapshot: %w", err)
			}
			if err := s.mem.ApplySnapshot(snap); err != nil {
				return err
			}
		}
		if b := meta.Get(keyHardState); b != nil {
			hs := &raftpb.HardState{}
			if err := proto.Unmarshal(b, hs); err != nil {
				return fmt.Errorf("raft storage: hard state: %w", err)
			}
			if err := s.mem.SetHardState(hs); err != nil {
				return err
			}
		}
		first, _ := s.mem.FirstIndex()
		var batch []*raftpb.Entry
		c := ents.Cursor()
		for k, v := c.Seek(idxKey(first)); k != nil; k, v = c.Next() {
			e := &raftpb.Entry{}
			if err := proto.Unmarshal(v, e); err != nil {
				return fmt.Errorf("raft storage: entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			batch = append(batch, e)
		}
		return s.mem.Append(batch)
	})
}

// Fresh reports whether nothing was ever stored (a brand-new node).
func (s *Storage) Fresh() bool {
	hs, _, _ := s.mem.InitialState()
	snap, _ := s.mem.Snapshot()
	last, _ := s.mem.LastIndex()
	return raft.IsEmptyHardState(hs) && raft.IsEmptySnap(snap) && last == 0
}

// Raft is the raft.Storage view raft reads from.
func (s *Storage) Raft() *raft.MemoryStorage { return s.mem }

// Save durably stores what a Ready asks to persist, in one fsync'd
// transaction, then mirrors it in memory. When raft says no sync is needed
// (only the commit index moved), the hard state is kept in memory only: a
// restarted node learns the commit index from the leader again, and
// SaveSnapshot writes it whenever it matters for recovery.
func (s *Storage) Save(hs *raftpb.HardState, entries []*raftpb.Entry, snap *raftpb.Snapshot, mustSync bool) error {
	if !mustSync && len(entries) == 0 && raft.IsEmptySnap(snap) {
		if !raft.IsEmptyHardState(hs) {
			return s.mem.SetHardState(hs)
		}
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		ents, meta := tx.Bucket(bucketEntries), tx.Bucket(bucketMeta)
		// Keys only ever grow: fill pages completely instead of splitting them in half.
		ents.FillPercent = 1.0
		if !raft.IsEmptySnap(snap) {
			b, err := proto.Marshal(snap)
			if err != nil {
				return err
			}
			if err := meta.Put(keySnapshot, b); err != nil {
				return err
			}
			if err := deleteBelow(ents, snap.GetMetadata().GetIndex()+1); err != nil {
				return err
			}
		}
		if len(entries) > 0 {
			// New entries replace any stored suffix from their first index on.
			c := ents.Cursor()
			for k, _ := c.Seek(idxKey(entries[0].GetIndex())); k != nil; k, _ = c.Next() {
				if err := c.Delete(); err != nil {
					return err
				}
			}
			for i := range entries {
				b, err := proto.Marshal(entries[i])
				if err != nil {
					return err
				}
				if err := ents.Put(idxKey(entries[i].GetIndex()), b); err != nil {
					return err
				}
			}
		}
		if !raft.IsEmptyHardState(hs) {
			b, err := proto.Marshal(hs)
			if err != nil {
				return err
			}
			return meta.Put(keyHardState, b)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("raft storage: save: %w", err)
	}
	if !raft.IsEmptySnap(snap) {
		if err := s.mem.ApplySnapshot(snap); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
			return err
		}
	}
	if !raft.IsEmptyHardState(hs) {
		if err := s.mem.SetHardState(hs); err != nil {
			return err
		}
	}
	return s.mem.Append(entries)
}

// SaveSnapshot stores a snapshot the node took itself and drops log
// entries below compactTo (entries after it stay for slow followers).
func (s *Storage) SaveSnapshot(snap *raftpb.Snapshot, compactTo uint64) error {
	b, err := proto.Marshal(snap)
	if err != nil {
		return err
	}
	// The stored hard state's commit index must not be behind the snapshot.
	hs, _, err := s.mem.InitialState()
	if err != nil {
		return err
	}
	hsb, err := proto.Marshal(hs)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keySnapshot, b); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMeta).Put(keyHardState, hsb); err != nil {
			return err
		}
		return deleteBelow(tx.Bucket(bucketEntries), compactTo)
	})
	if err != nil {
		return fmt.Errorf("raft storage: save snapshot: %w", err)
	}
	if err := s.mem.Compact(compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return err
	}
	return nil
}

func deleteBelow(b *bolt.Bucket, index uint64) error {
	c := b.Cursor()
	for k, _ := c.First(); k != nil && binary.BigEndian.Uint64(k) < index; k, _ = c.Next() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the file.
func (s *Storage) Close() error { return s.db.Close() }
