package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
// The segment format, and how a torn write is told from damage, is
// described in wal.go. Records are a marshalled raftpb.Entry or
// raftpb.HardState.
type Storage struct {
	dir string
	mem *raft.MemoryStorage

	seg       *os.File
	segSize   int64     // where the next batch is written in seg
	segAlloc  int64     // what seg was preallocated to
	segLegacy bool      // seg is a version 1 segment (read, never appended to)
	prealloc  int64     // the size new segments are preallocated to
	segments  []segment // oldest first; the last is being written
	buf       []byte    // the batch being built, after room for its header
	last      *raftpb.HardState
	seq       uint64 // number of the newest segment

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

	// SegmentSize is the size new segments are preallocated to; a new
	// segment is started once it is full.
	SegmentSize = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// OpenStorage opens (or creates) the raft state under dir. It refuses a
// log damaged in a way a crash cannot explain (ErrWALDamaged, naming the
// file and offset) or written in a newer format (ErrWALNewer).
func OpenStorage(dir string) (*Storage, error) {
	return openStorage(dir, SegmentSize)
}

func openStorage(dir string, prealloc int64) (*Storage, error) {
	for _, d := range []string{filepath.Join(dir, "wal"), filepath.Join(dir, "snap")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("raft storage: %w", err)
		}
	}
	s := &Storage{dir: dir, mem: raft.NewMemoryStorage(), prealloc: prealloc, buf: make([]byte, batchHeaderLen, 64<<10)}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Storage) snapPath() string { return filepath.Join(s.dir, "snap", "latest.snap") }

// The snapshot file, version 2: a 16-byte header (magic, format version,
// CRC-32C of the rest) before the marshalled raftpb.Snapshot. Version 1 was
// the bare message. The magic starts with a zero byte, which no protobuf
// message starts with, so a binary that reads only version 1 fails to
// parse the file instead of misreading it.
const (
	snapMagic     = "\x00hm-snap"
	snapVersion   = 2
	snapHeaderLen = 16
)

// ErrSnapshotDamaged is returned when the snapshot file fails its checksum.
var ErrSnapshotDamaged = errors.New("snapshot file damaged")

func encodeSnapshotFile(snap *raftpb.Snapshot) ([]byte, error) {
	b := make([]byte, snapHeaderLen, snapHeaderLen+proto.Size(snap))
	b, err := proto.MarshalOptions{}.MarshalAppend(b, snap)
	if err != nil {
		return nil, err
	}
	copy(b, snapMagic)
	binary.BigEndian.PutUint32(b[8:12], snapVersion)
	binary.BigEndian.PutUint32(b[12:16], crc32.Checksum(b[snapHeaderLen:], crcTable))
	return b, nil
}

func decodeSnapshotFile(path string, b []byte) (*raftpb.Snapshot, error) {
	name := filepath.Base(path)
	if len(b) > 0 && b[0] == 0 {
		if len(b) < snapHeaderLen || string(b[:8]) != snapMagic {
			return nil, fmt.Errorf("raft storage: %w: %s: bad header", ErrSnapshotDamaged, name)
		}
		if v := binary.BigEndian.Uint32(b[8:12]); v != snapVersion {
			if v > snapVersion {
				return nil, fmt.Errorf("raft storage: %s has snapshot format version %d; this binary reads versions 1 to %d", name, v, snapVersion)
			}
			return nil, fmt.Errorf("raft storage: %w: %s: header names version %d", ErrSnapshotDamaged, name, v)
		}
		if crc32.Checksum(b[snapHeaderLen:], crcTable) != binary.BigEndian.Uint32(b[12:16]) {
			return nil, fmt.Errorf("raft storage: %w: %s: checksum mismatch", ErrSnapshotDamaged, name)
		}
		b = b[snapHeaderLen:]
	}
	snap := &raftpb.Snapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		return nil, fmt.Errorf("raft storage: %w: %s: %v", ErrSnapshotDamaged, name, err)
	}
	return snap, nil
}

func (s *Storage) loadSnapshot() error {
	b, err := os.ReadFile(s.snapPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("raft storage: %w", err)
	}
	snap, err := decodeSnapshotFile(s.snapPath(), b)
	if err != nil {
		return err
	}
	if err := s.mem.ApplySnapshot(snap); err != nil {
		return err
	}
	s.snapOnDisk = snap.GetMetadata().GetIndex()
	return nil
}

func (s *Storage) load() error {
	if err := s.loadSnapshot(); err != nil {
		return err
	}
	walDir := filepath.Join(s.dir, "wal")
	// A segment is created under a temporary name and renamed once
	// preallocated and synced; a leftover one never held a record.
	tmps, _ := filepath.Glob(filepath.Join(walDir, "*.wal.tmp"))
	for _, t := range tmps {
		if err := os.Remove(t); err != nil {
			return fmt.Errorf("raft storage: %w", err)
		}
	}
	names, err := filepath.Glob(filepath.Join(walDir, "*.wal"))
	if err != nil {
		return err
	}
	slices.Sort(names)
	var ents []*raftpb.Entry
	for i, name := range names {
		var seq uint64
		if _, err := fmt.Sscanf(filepath.Base(name), "%016x.wal", &seq); err != nil {
			return fmt.Errorf("raft storage: unexpected file %s", name)
		}
		if i > 0 && seq != s.seq+1 {
			return fmt.Errorf("raft storage: %w: segments %016x to %016x are missing (the log jumps from %s to %s)", ErrWALDamaged, s.seq+1, seq-1, filepath.Base(names[i-1]), filepath.Base(name))
		}
		s.seq = seq
		if err := s.readSegment(name, i, len(names), &ents); err != nil {
			return err
		}
	}
	first, _ := s.mem.FirstIndex()
	i := 0
	for i < len(ents) && ents[i].GetIndex() < first {
		i++
	}
	if i < len(ents) && ents[i].GetIndex() != first {
		return fmt.Errorf("raft storage: %w: the log resumes at index %d, but the snapshot ends at %d", ErrWALDamaged, ents[i].GetIndex(), first-1)
	}
	if err := s.mem.Append(ents[i:]); err != nil {
		return err
	}
	if s.last != nil {
		// A snapshot written just before a crash may be ahead of the last
		// logged commit index; what it contains was committed.
		if s.last.GetCommit() < first-1 {
			s.last.Commit = proto.Uint64(first - 1)
		}
		// Committed entries that are gone cannot be recovered from here,
		// and raft would panic on the leader's first heartbeat.
		if lastIdx, _ := s.mem.LastIndex(); s.last.GetCommit() > lastIdx {
			return fmt.Errorf("raft storage: %w: entries up to %d were committed but the log ends at %d", ErrWALDamaged, s.last.GetCommit(), lastIdx)
		}
		if err := s.mem.SetHardState(s.last); err != nil {
			return err
		}
	}
	if s.seg == nil || s.segLegacy {
		return s.rotate()
	}
	return nil
}

// readSegment replays segment i of n into ents (a later entry with an
// index already seen replaces it and everything after it, as raft
// overwrote them). The newest segment is left open for appending, its torn
// tail, if any, cleared.
func (s *Storage) readSegment(path string, i, n int, ents *[]*raftpb.Entry) error {
	last := i == n-1
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("raft storage: %w", err)
	}
	seg := segment{path: path}
	replay := func(typ byte, payload []byte) error { return s.replay(path, typ, payload, &seg, ents) }
	version, alloc, err := parseSegmentHeader(path, data)
	if err != nil {
		return err
	}
	if version == 1 {
		end, torn, err := scanLegacySegment(path, data, last, replay)
		if err != nil {
			return err
		}
		s.segments = append(s.segments, seg)
		if last {
			if torn {
				// A crash in the middle of the last write: drop the torn tail.
				if err := os.Truncate(path, int64(end)); err != nil {
					return fmt.Errorf("raft storage: %w", err)
				}
			}
			// Appends go to a new segment in the current format.
			s.segLegacy = true
		}
		return nil
	}
	sc, err := scanSegment(path, data, alloc, last)
	if err != nil {
		return err
	}
	for _, b := range sc.batches {
		if err := splitRecords(path, b.off, b.body, replay); err != nil {
			return err
		}
	}
	s.segments = append(s.segments, seg)
	switch {
	case last && sc.sealed:
		return fmt.Errorf("raft storage: %w: %s is sealed, so the log continued in segment %016x, which is missing", ErrWALDamaged, filepath.Base(path), s.seq+1)
	case !last && !sc.sealed:
		// Only the crash between creating the newest segment and sealing
		// this one leaves it unsealed, and then nothing was written since.
		if i != n-2 {
			return damaged(path, sc.end, "the segment is not sealed, but newer segments follow")
		}
		if err := s.openSegment(path, sc, alloc); err != nil {
			return err
		}
		if err := s.seal(); err != nil {
			return err
		}
		s.seg.Close()
		s.seg = nil
		return nil
	case last:
		return s.openSegment(path, sc, alloc)
	}
	return nil
}

// openSegment opens a segment for appending at sc.end, first clearing
// (and syncing) what a torn write left after it.
func (s *Storage) openSegment(path string, sc scannedSegment, alloc int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("raft storage: %w", err)
	}
	s.seg, s.segSize, s.segAlloc = f, int64(sc.end), alloc
	if !sc.torn {
		return nil
	}
	// Past the preallocated size the file is cut back; within it, the
	// bytes written are cleared, so a later batch never runs into them.
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("raft storage: %w", err)
	}
	if keep := max(alloc, int64(sc.end)); st.Size() > keep {
		if err := f.Truncate(keep); err != nil {
			return fmt.Errorf("raft storage: drop torn tail: %w", err)
		}
		sc.dirty = min(sc.dirty, int(keep))
	}
	if sc.dirty > sc.end {
		if _, err := f.WriteAt(make([]byte, sc.dirty-sc.end), int64(sc.end)); err != nil {
			return fmt.Errorf("raft storage: drop torn tail: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("raft storage: drop torn tail: %w", err)
	}
	return nil
}

func (s *Storage) replay(path string, typ byte, payload []byte, seg *segment, ents *[]*raftpb.Entry) error {
	switch typ {
	case recEntry:
		e := &raftpb.Entry{}
		if err := proto.Unmarshal(payload, e); err != nil {
			return fmt.Errorf("raft storage: %w: entry in %s: %v", ErrWALDamaged, filepath.Base(path), err)
		}
		for len(*ents) > 0 && (*ents)[len(*ents)-1].GetIndex() >= e.GetIndex() {
			*ents = (*ents)[:len(*ents)-1]
		}
		*ents = append(*ents, e)
		seg.maxIndex = max(seg.maxIndex, e.GetIndex())
	case recHardState:
		hs := &raftpb.HardState{}
		if err := proto.Unmarshal(payload, hs); err != nil {
			return fmt.Errorf("raft storage: %w: hard state in %s: %v", ErrWALDamaged, filepath.Base(path), err)
		}
		s.last = hs
	default:
		return fmt.Errorf("raft storage: unknown record type %d in %s", typ, filepath.Base(path))
	}
	return nil
}

func (s *Storage) appendRecord(typ byte, m proto.Message) error {
	start := len(s.buf)
	s.buf = append(s.buf, 0, 0, 0, 0, typ)
	var err error
	s.buf, err = proto.MarshalOptions{}.MarshalAppend(s.buf, m)
	if err != nil {
		s.buf = s.buf[:start]
		return err
	}
	binary.BigEndian.PutUint32(s.buf[start:start+4], uint32(len(s.buf)-start-5))
	return nil
}

// flush writes the buffered records as one batch and, if sync, waits for
// the disk.
func (s *Storage) flush(sync bool) error {
	if len(s.buf) > batchHeaderLen {
		if err := s.writeBatch(batchData); err != nil {
			return err
		}
	}
	if sync {
		if err := fdatasync(s.seg); err != nil {
			return fmt.Errorf("raft storage: sync: %w", err)
		}
	}
	if s.segSize >= s.segAlloc {
		return s.rotate()
	}
	return nil
}

// writeBatch writes the records in buf as one batch of the given kind.
func (s *Storage) writeBatch(kind uint32) error {
	body := len(s.buf) - batchHeaderLen
	putBatchHeader(s.buf[:batchHeaderLen], kind, s.buf[batchHeaderLen:])
	for len(s.buf)%16 != 0 {
		s.buf = append(s.buf, 0)
	}
	_, err := s.seg.WriteAt(s.buf, s.segSize)
	s.buf = s.buf[:batchHeaderLen]
	if err != nil {
		return fmt.Errorf("raft storage: write: %w", err)
	}
	s.segSize += int64(align16(batchHeaderLen + body))
	return nil
}

// seal ends the current segment: a newer one exists and is durable.
func (s *Storage) seal() error {
	if err := s.writeBatch(batchSeal); err != nil {
		return err
	}
	if err := fdatasync(s.seg); err != nil {
		return fmt.Errorf("raft storage: sync: %w", err)
	}
	return nil
}

// rotate starts a new segment: created under a temporary name,
// preallocated, synced and put in place, then the previous segment is
// sealed. It opens with the current hard state, so older segments can be
// removed without losing it.
func (s *Storage) rotate() error {
	walDir := filepath.Join(s.dir, "wal")
	name := filepath.Join(walDir, fmt.Sprintf("%016x.wal", s.seq+1))
	f, err := os.OpenFile(name+".tmp", os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("raft storage: new segment: %w", err)
	}
	err = preallocate(f, s.prealloc)
	if err == nil {
		_, err = f.WriteAt(segmentHeader(s.prealloc), 0)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(name+".tmp", name)
	}
	if err == nil {
		err = atomicfile.SyncDir(walDir)
	}
	if err != nil {
		f.Close()
		os.Remove(name + ".tmp")
		return fmt.Errorf("raft storage: new segment: %w", err)
	}
	if s.seg != nil {
		if !s.segLegacy {
			if err := s.seal(); err != nil {
				f.Close()
				return err
			}
		}
		s.seg.Close()
	}
	s.seq++
	s.seg, s.segSize, s.segAlloc, s.segLegacy = f, segHeaderLen, s.prealloc, false
	s.segments = append(s.segments, segment{path: name})
	if s.last != nil {
		if err := s.appendRecord(recHardState, s.last); err != nil {
			return err
		}
		return s.flush(true)
	}
	return nil
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
	b, err := encodeSnapshotFile(snap)
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
