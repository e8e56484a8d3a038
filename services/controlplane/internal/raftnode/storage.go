package raftnode

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/atomicfile"
)

// Storage keeps a member's raft state on disk: an append-only write-ahead
// log of entries and hard states in segment files, and the latest snapshot
// in a file of its own. Everything a raft Ready asks to persist is appended
// as one write and made durable with one fdatasync before Save returns, so
// the member never sends a message or acknowledges a write that depends on
// state it could lose. Reads are served by an in-memory raft.MemoryStorage
// rebuilt from the files on open.
//
// Record format: 4-byte length, 4-byte CRC-32C of type and payload, 1-byte
// type, payload (a marshalled raftpb.Entry or raftpb.HardState). A record
// cut short by a crash at the end of the last segment is dropped on open;
// anywhere else a bad record is corruption and opening fails.
type Storage struct {
	dir string
	mem *raft.MemoryStorage

	seg      *os.File
	segSize  int64
	segments []segment // oldest first; the last is being written
	buf      []byte
	last     *raftpb.HardState
	seq      uint64 // number of the newest segment

	snapMu     sync.Mutex
	snapOnDisk uint64 // index of the snapshot file on disk
}

type segment struct {
	path     string
	maxIndex uint64 // highest entry index written into it
}

const (
	recEntry     byte = 1
	recHardState byte = 2

	// SegmentSize is the size past which a new segment is started.
	SegmentSize = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// OpenStorage opens (or creates) the raft state under dir.
func OpenStorage(dir string) (*Storage, error) {
	for _, d := range []string{filepath.Join(dir, "wal"), filepath.Join(dir, "snap")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("raft storage: %w", err)
		}
	}
	s := &Storage{dir: dir, mem: raft.NewMemoryStorage()}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Storage) snapPath() string { return filepath.Join(s.dir, "snap", "latest.snap") }

func (s *Storage) load() error {
	if b, err := os.ReadFile(s.snapPath()); err == nil {
		snap := &raftpb.Snapshot{}
		if err := proto.Unmarshal(b, snap); err != nil {
			return fmt.Errorf("raft storage: snapshot: %w", err)
		}
		if err := s.mem.ApplySnapshot(snap); err != nil {
			return err
		}
		s.snapOnDisk = snap.GetMetadata().GetIndex()
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("raft storage: %w", err)
	}

	names, err := filepath.Glob(filepath.Join(s.dir, "wal", "*.wal"))
	if err != nil {
		return err
	}
	slices.Sort(names)
	var ents []*raftpb.Entry
	for i, name := range names {
		seg, err := s.readSegment(name, i == len(names)-1, &ents)
		if err != nil {
			return err
		}
		s.segments = append(s.segments, seg)
		if _, err := fmt.Sscanf(filepath.Base(name), "%016x.wal", &s.seq); err != nil {
			return fmt.Errorf("raft storage: unexpected file %s", name)
		}
	}
	first, _ := s.mem.FirstIndex()
	if s.last != nil {
		// A snapshot written just before a crash may be ahead of the last
		// logged commit index; what it contains was committed.
		if s.last.GetCommit() < first-1 {
			s.last.Commit = proto.Uint64(first - 1)
		}
		if err := s.mem.SetHardState(s.last); err != nil {
			return err
		}
	}
	i := 0
	for i < len(ents) && ents[i].GetIndex() < first {
		i++
	}
	if err := s.mem.Append(ents[i:]); err != nil {
		return err
	}
	if len(s.segments) == 0 {
		return s.rotate()
	}
	cur := s.segments[len(s.segments)-1]
	f, err := os.OpenFile(cur.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.seg, s.segSize = f, st.Size()
	return nil
}

// readSegment replays one segment into ents (a later entry with an index
// already seen replaces it and everything after it, as raft overwrote them).
func (s *Storage) readSegment(path string, last bool, ents *[]*raftpb.Entry) (segment, error) {
	seg := segment{path: path}
	f, err := os.Open(path)
	if err != nil {
		return seg, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	for {
		typ, payload, n, err := readRecord(r)
		if errors.Is(err, io.EOF) {
			return seg, nil
		}
		if err != nil {
			if last {
				// A crash in the middle of the last write: drop the torn tail.
				if terr := os.Truncate(path, off); terr != nil {
					return seg, terr
				}
				return seg, nil
			}
			return seg, fmt.Errorf("raft storage: %s at offset %d: %w", filepath.Base(path), off, err)
		}
		off += n
		switch typ {
		case recEntry:
			e := &raftpb.Entry{}
			if err := proto.Unmarshal(payload, e); err != nil {
				return seg, fmt.Errorf("raft storage: entry in %s: %w", filepath.Base(path), err)
			}
			for len(*ents) > 0 && (*ents)[len(*ents)-1].GetIndex() >= e.GetIndex() {
				*ents = (*ents)[:len(*ents)-1]
			}
			*ents = append(*ents, e)
			seg.maxIndex = max(seg.maxIndex, e.GetIndex())
		case recHardState:
			hs := &raftpb.HardState{}
			if err := proto.Unmarshal(payload, hs); err != nil {
				return seg, fmt.Errorf("raft storage: hard state in %s: %w", filepath.Base(path), err)
			}
			s.last = hs
		default:
			return seg, fmt.Errorf("raft storage: unknown record type %d in %s", typ, filepath.Base(path))
		}
	}
}

var errTorn = errors.New("torn or corrupt record")

func readRecord(r *bufio.Reader) (typ byte, payload []byte, n int64, err error) {
	var hdr [9]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, nil, 0, io.EOF
		}
		return 0, nil, 0, errTorn
	}
	size := binary.BigEndian.Uint32(hdr[0:4])
	if size > MaxMessageSize {
		return 0, nil, 0, errTorn
	}
	payload = make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, 0, errTorn
	}
	crc := crc32.Update(crc32.Checksum(hdr[8:9], crcTable), crcTable, payload)
	if crc != binary.BigEndian.Uint32(hdr[4:8]) {
		return 0, nil, 0, errTorn
	}
	return hdr[8], payload, int64(9 + size), nil
}

func (s *Storage) appendRecord(typ byte, m proto.Message) error {
	start := len(s.buf)
	s.buf = append(s.buf, make([]byte, 9)...)
	var err error
	s.buf, err = proto.MarshalOptions{}.MarshalAppend(s.buf, m)
	if err != nil {
		s.buf = s.buf[:start]
		return err
	}
	payload := s.buf[start+9:]
	hdr := s.buf[start : start+9]
	hdr[8] = typ
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(hdr[4:8], crc32.Update(crc32.Checksum(hdr[8:9], crcTable), crcTable, payload))
	return nil
}

// flush writes the buffered records and, if sync, waits for the disk.
func (s *Storage) flush(sync bool) error {
	if len(s.buf) > 0 {
		n, err := s.seg.Write(s.buf)
		s.segSize += int64(n)
		s.buf = s.buf[:0]
		if err != nil {
			return fmt.Errorf("raft storage: write: %w", err)
		}
	}
	if sync {
		if err := fdatasync(s.seg); err != nil {
			return fmt.Errorf("raft storage: sync: %w", err)
		}
	}
	if s.segSize >= SegmentSize {
		return s.rotate()
	}
	return nil
}

// rotate starts a new segment. It opens with the current hard state, so
// older segments can be removed without losing it.
func (s *Storage) rotate() error {
	s.seq++
	name := filepath.Join(s.dir, "wal", fmt.Sprintf("%016x.wal", s.seq))
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("raft storage: new segment: %w", err)
	}
	if s.seg != nil {
		s.seg.Close()
	}
	s.seg, s.segSize = f, 0
	s.segments = append(s.segments, segment{path: name})
	if s.last != nil {
		if err := s.appendRecord(recHardState, s.last); err != nil {
			return err
		}
		if err := s.flush(true); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(filepath.Join(s.dir, "wal"))
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

// Save durably stores what a Ready asks to persist, then mirrors it in
// memory. When raft says no sync is needed (only the commit index moved),
// the hard state is kept in memory only: a restarted member learns the
// commit index from the leader again, and Compacted writes it whenever
// recovery depends on it.
func (s *Storage) Save(hs *raftpb.HardState, entries []*raftpb.Entry, snap *raftpb.Snapshot, mustSync bool) error {
	if !raft.IsEmptySnap(snap) {
		if err := s.writeSnapshot(snap); err != nil {
			return err
		}
		if err := s.mem.ApplySnapshot(snap); err != nil && !errors.Is(err, raft.ErrSnapOutOfDate) {
			return err
		}
	}
	if !mustSync && len(entries) == 0 && raft.IsEmptySnap(snap) {
		if !raft.IsEmptyHardState(hs) {
			return s.mem.SetHardState(hs)
		}
		return nil
	}
	for _, e := range entries {
		if err := s.appendRecord(recEntry, e); err != nil {
			return err
		}
	}
	if len(entries) > 0 {
		seg := &s.segments[len(s.segments)-1]
		seg.maxIndex = max(seg.maxIndex, entries[len(entries)-1].GetIndex())
	}
	if !raft.IsEmptyHardState(hs) {
		if err := s.appendRecord(recHardState, hs); err != nil {
			return err
		}
		s.last = hs
	}
	if err := s.flush(true); err != nil {
		return err
	}
	if !raft.IsEmptyHardState(hs) {
		if err := s.mem.SetHardState(hs); err != nil {
			return err
		}
	}
	return s.mem.Append(entries)
}

// writeSnapshot stores snap as the latest snapshot file, unless a newer one
// is there already. The member's own snapshots are written in the
// background while the Ready loop may install one from the leader, so two
// writers can race; the newer snapshot always wins.
func (s *Storage) writeSnapshot(snap *raftpb.Snapshot) error {
	b, err := proto.Marshal(snap)
	if err != nil {
		return err
	}
	idx := snap.GetMetadata().GetIndex()
	p, err := atomicfile.Prepare(s.snapPath(), b, 0o600)
	if err != nil {
		return fmt.Errorf("raft storage: snapshot: %w", err)
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if idx <= s.snapOnDisk {
		return p.Abort()
	}
	if err := p.Commit(); err != nil {
		return fmt.Errorf("raft storage: snapshot: %w", err)
	}
	s.snapOnDisk = idx
	return nil
}

// Compacted records that a snapshot of the member's own (already written
// with writeSnapshot) covers the log, and drops the entries below
// compactTo: from memory, and whole segments from disk.
func (s *Storage) Compacted(compactTo uint64) error {
	// The logged commit index must not be behind the snapshot on restart.
	hs, _, err := s.mem.InitialState()
	if err != nil {
		return err
	}
	if err := s.appendRecord(recHardState, hs); err != nil {
		return err
	}
	s.last = proto.Clone(hs).(*raftpb.HardState)
	if err := s.flush(true); err != nil {
		return err
	}
	if err := s.mem.Compact(compactTo); err != nil && !errors.Is(err, raft.ErrCompacted) {
		return err
	}
	for len(s.segments) > 1 && s.segments[0].maxIndex < compactTo {
		if err := os.Remove(s.segments[0].path); err != nil {
			return fmt.Errorf("raft storage: remove segment: %w", err)
		}
		s.segments = s.segments[1:]
	}
	return nil
}

// Close closes the current segment.
func (s *Storage) Close() error {
	if s.seg == nil {
		return nil
	}
	err := s.seg.Close()
	s.seg = nil
	return err
}
