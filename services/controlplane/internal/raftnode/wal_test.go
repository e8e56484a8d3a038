package raftnode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

const testPrealloc = 64 << 10

// walBatchEnd is where each Save's batch ended in the newest segment, and
// the last index it made durable.
type savedBatch struct {
	start, end int64
	lastIndex  uint64
}

// writeTestLog saves n batches of 3 entries with non-zero data (so that no
// acknowledged batch holds a zero sector) and returns where they are.
func writeTestLog(t *testing.T, dir string, n int) (string, []savedBatch) {
	t.Helper()
	s, err := openStorage(dir, testPrealloc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var out []savedBatch
	next := uint64(1)
	for i := 0; i < n; i++ {
		ents := entries(next, 3, 400)
		for j, e := range ents {
			for k := range e.Data {
				e.Data[k] = byte(1 + (i*7+j*3+k)%250)
			}
		}
		next += 3
		start := s.segSize
		hs := &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(next - 1)}
		if err := s.Save(hs, ents, nil, true); err != nil {
			t.Fatal(err)
		}
		out = append(out, savedBatch{start, s.segSize, next - 1})
	}
	return s.segments[len(s.segments)-1].path, out
}

func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, sub := range []string{"wal", "snap"} {
		if err := os.MkdirAll(filepath.Join(to, sub), 0o750); err != nil {
			t.Fatal(err)
		}
		names, _ := filepath.Glob(filepath.Join(from, sub, "*"))
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(to, sub, filepath.Base(n)), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return to
}

func lastIndexAfterOpen(t *testing.T, dir string) (uint64, error) {
	t.Helper()
	s, err := openStorage(dir, testPrealloc)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	last, _ := s.Raft().LastIndex()
	return last, nil
}

// wantRefused checks err is ErrWALDamaged naming the segment and offset.
func wantRefused(t *testing.T, err error, seg string, off int64, what string) {
	t.Helper()
	want := fmt.Sprintf("%s at offset %d", filepath.Base(seg), off)
	if !errors.Is(err, ErrWALDamaged) || !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: open gave %v; want ErrWALDamaged naming %q", what, err, want)
	}
}

// A crash during the last write leaves whole sectors of it unwritten
// (zero) in the preallocated segment. Every such torn tail is dropped, and
// everything synced before it is kept; the member then appends after it.
func TestWALTornLastWriteIsDropped(t *testing.T) {
	src := t.TempDir()
	segPath, batches := writeTestLog(t, src, 8)
	last, prev := batches[len(batches)-1], batches[len(batches)-2]
	if last.end-last.start < 2*sectorSize {
		t.Fatalf("the last batch (%d bytes) should span sectors", last.end-last.start)
	}
	// The unwritten sectors are the end of the write, or its start (the
	// header's sector) with the rest written.
	type region struct{ from, to int64 }
	var torn []region
	for from := last.start - last.start%sectorSize; from < last.end; from += sectorSize {
		torn = append(torn, region{max(from, last.start), last.end})
		torn = append(torn, region{last.start, min(from+sectorSize, last.end)})
	}
	for _, r := range torn {
		from := r.from
		dir := copyDir(t, src)
		seg := filepath.Join(dir, "wal", filepath.Base(segPath))
		b, _ := os.ReadFile(seg)
		clear(b[r.from:r.to])
		os.WriteFile(seg, b, 0o600)
		got, err := lastIndexAfterOpen(t, dir)
		if err != nil {
			t.Fatalf("unwritten sectors from %d: %v", from, err)
		}
		if got != prev.lastIndex {
			t.Fatalf("unwritten sectors from %d: last index %d, want %d (all synced before the torn write)", from, got, prev.lastIndex)
		}
		// The torn bytes are cleared, so what is appended next reads back.
		s, err := openStorage(dir, testPrealloc)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Save(&raftpb.HardState{Term: proto.Uint64(2), Commit: proto.Uint64(got)}, entries(got+1, 1, 8), nil, true); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if again, err := lastIndexAfterOpen(t, dir); err != nil || again != got+1 {
			t.Fatalf("after appending past the torn tail: last index %d, %v; want %d", again, err, got+1)
		}
	}
}

// A write that extended the file past its preallocated size can be cut
// anywhere by a crash: the partial batch is dropped.
func TestWALCutExtendingWriteIsDropped(t *testing.T) {
	src := t.TempDir()
	s, err := openStorage(src, testPrealloc)
	if err != nil {
		t.Fatal(err)
	}
	hs := &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(2)}
	if err := s.Save(hs, entries(1, 2, 8), nil, true); err != nil {
		t.Fatal(err)
	}
	start := s.segSize
	big := entries(3, 1, testPrealloc)
	for i := range big[0].Data {
		big[0].Data[i] = 7
	}
	if err := s.Save(hs, big, nil, true); err != nil {
		t.Fatal(err)
	}
	segPath := s.segments[0].path
	if len(s.segments) != 2 {
		t.Fatalf("%d segments, want 2 after a write that filled the first", len(s.segments))
	}
	s.Close()
	// The crash came before the segment was sealed and the next created.
	bigEnd := start + int64(align16(batchHeaderLen+5+proto.Size(big[0])))
	for cut := bigEnd - 1; cut > testPrealloc; cut -= 997 {
		dir := copyDir(t, src)
		os.Remove(filepath.Join(dir, "wal", "0000000000000002.wal"))
		if err := os.Truncate(filepath.Join(dir, "wal", filepath.Base(segPath)), cut); err != nil {
			t.Fatal(err)
		}
		if got, err := lastIndexAfterOpen(t, dir); err != nil || got != 2 {
			t.Fatalf("cut at %d (batch at %d): last index %d, %v; want 2", cut, start, got, err)
		}
	}
}

// A preallocated segment cannot be shortened by a crash: cutting it
// anywhere in its records is damage, refused with the file and offset.
func TestWALTruncatedSegmentIsRefused(t *testing.T) {
	src := t.TempDir()
	segPath, batches := writeTestLog(t, src, 6)
	orig, _ := os.ReadFile(segPath)
	dir := copyDir(t, src)
	seg := filepath.Join(dir, "wal", filepath.Base(segPath))
	for cut := batches[len(batches)-2].start; cut <= batches[len(batches)-1].end; cut++ {
		if err := os.WriteFile(seg, orig[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := lastIndexAfterOpen(t, dir)
		wantRefused(t, err, segPath, cut, fmt.Sprintf("cut at %d", cut))
	}
	// Cutting off the last kilobytes (zeros here) is refused as well: the
	// member cannot know they held nothing.
	dir = copyDir(t, src)
	os.Truncate(filepath.Join(dir, "wal", filepath.Base(segPath)), testPrealloc-4096)
	_, err := lastIndexAfterOpen(t, dir)
	wantRefused(t, err, segPath, testPrealloc-4096, "last 4 KiB cut")
}

// A flipped bit anywhere in a synced batch - its header, the body's
// checksum, the body - is damage: refused, naming the batch's offset.
// Only the padding between batches is not read.
func TestWALFlippedBitsAreRefused(t *testing.T) {
	src := t.TempDir()
	segPath, batches := writeTestLog(t, src, 6)
	orig, _ := os.ReadFile(segPath)
	dir := copyDir(t, src)
	seg := filepath.Join(dir, "wal", filepath.Base(segPath))
	for _, b := range []savedBatch{batches[2], batches[len(batches)-1]} {
		bodyLen := int64(binary.BigEndian.Uint32(orig[b.start : b.start+4]))
		for off := b.start; off < b.end; off++ {
			// Every byte of the header and the padding, every 11th of the body.
			if off >= b.start+batchHeaderLen && off < b.start+batchHeaderLen+bodyLen-1 && (off-b.start)%11 != 0 {
				continue
			}
			for _, bit := range []byte{byte(1 << (off % 8))} {
				data := append([]byte(nil), orig...)
				data[off] ^= bit
				os.WriteFile(seg, data, 0o600)
				got, err := lastIndexAfterOpen(t, dir)
				if off >= b.start+batchHeaderLen+bodyLen {
					if err != nil || got != batches[len(batches)-1].lastIndex {
						t.Fatalf("flip in padding at %d: %d, %v", off, got, err)
					}
					continue
				}
				wantRefused(t, err, segPath, b.start, fmt.Sprintf("bit %#x flipped at %d", bit, off))
			}
		}
	}
	// And the segment header.
	data := append([]byte(nil), orig...)
	data[20] ^= 1
	os.WriteFile(seg, data, 0o600)
	_, err := lastIndexAfterOpen(t, dir)
	wantRefused(t, err, segPath, 0, "flip in the segment header")
}

// A batch whose header is zeroed while synced batches follow is damage,
// not the end of the log.
func TestWALZeroedHeaderBeforeDataIsRefused(t *testing.T) {
	src := t.TempDir()
	segPath, batches := writeTestLog(t, src, 5)
	b := batches[2]
	dir := copyDir(t, src)
	seg := filepath.Join(dir, "wal", filepath.Base(segPath))
	data, _ := os.ReadFile(seg)
	clear(data[b.start : b.start+batchHeaderLen])
	os.WriteFile(seg, data, 0o600)
	_, err := lastIndexAfterOpen(t, dir)
	wantRefused(t, err, segPath, b.start, "zeroed header")
}

func writeRotatedLog(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	s, err := openStorage(dir, testPrealloc)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 10; i++ {
		hs := &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(i*20 + 20)}
		if err := s.Save(hs, entries(i*20+1, 20, 1000), nil, true); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
	if len(segs) < 3 {
		t.Fatalf("%d segments, want at least 3", len(segs))
	}
	return dir, segs
}

// The newest segment removed: the one before it is sealed, so the loss is
// seen. A segment missing in the middle is a gap in the numbers.
func TestWALMissingSegmentsAreRefused(t *testing.T) {
	dir, segs := writeRotatedLog(t)
	if got, err := lastIndexAfterOpen(t, copyDir(t, dir)); err != nil || got != 200 {
		t.Fatalf("intact log: %d, %v", got, err)
	}
	d := copyDir(t, dir)
	os.Remove(filepath.Join(d, "wal", filepath.Base(segs[len(segs)-1])))
	_, err := lastIndexAfterOpen(t, d)
	if !errors.Is(err, ErrWALDamaged) || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), filepath.Base(segs[len(segs)-2])) {
		t.Fatalf("newest segment removed: %v", err)
	}
	d = copyDir(t, dir)
	os.Remove(filepath.Join(d, "wal", filepath.Base(segs[1])))
	if _, err := lastIndexAfterOpen(t, d); !errors.Is(err, ErrWALDamaged) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("middle segment removed: %v", err)
	}
	// The oldest segment removed without a snapshot covering it.
	d = copyDir(t, dir)
	os.Remove(filepath.Join(d, "wal", filepath.Base(segs[0])))
	if _, err := lastIndexAfterOpen(t, d); !errors.Is(err, ErrWALDamaged) {
		t.Fatalf("oldest segment removed: %v", err)
	}
}

// A crash between creating a new segment and sealing the previous one
// leaves it unsealed: that is not damage, and it is sealed on open.
func TestWALUnsealedBeforeNewestIsSealedOnOpen(t *testing.T) {
	dir, segs := writeRotatedLog(t)
	prev := segs[len(segs)-2]
	data, _ := os.ReadFile(prev)
	sc, err := scanSegment(prev, data, testPrealloc, false)
	if err != nil || !sc.sealed {
		t.Fatalf("scan: %v, sealed %v", err, sc.sealed)
	}
	clear(data[sc.end-batchHeaderLen : sc.end]) // the seal batch, an empty body
	os.WriteFile(prev, data, 0o600)
	for i := 0; i < 2; i++ {
		if got, err := lastIndexAfterOpen(t, dir); err != nil || got != 200 {
			t.Fatalf("open %d: %d, %v", i, got, err)
		}
	}
	data, _ = os.ReadFile(prev)
	if sc, err := scanSegment(prev, data, testPrealloc, false); err != nil || !sc.sealed {
		t.Fatalf("not sealed on open: %v", err)
	}
}

// legacyRecord frames a record as version 1 did.
func legacyRecord(typ byte, m proto.Message) []byte {
	payload, _ := proto.Marshal(m)
	b := make([]byte, 9, 9+len(payload))
	binary.BigEndian.PutUint32(b[0:4], uint32(len(payload)))
	b[8] = typ
	binary.BigEndian.PutUint32(b[4:8], crc32.Update(crc32.Checksum(b[8:9], crcTable), crcTable, payload))
	return append(b, payload...)
}

// A log written by the previous version is read; appends go to a new
// segment in the current format. Its torn last record is dropped, damage
// in the middle refused, and a hard state ahead of the log refused.
func TestWALReadsVersion1(t *testing.T) {
	var v1 []byte
	for _, e := range entries(1, 5, 20) {
		v1 = append(v1, legacyRecord(recEntry, e)...)
	}
	hsRec := legacyRecord(recHardState, &raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(5)})
	v1 = append(v1, hsRec...)
	write := func(data []byte) string {
		dir := t.TempDir()
		os.MkdirAll(filepath.Join(dir, "wal"), 0o750)
		os.WriteFile(filepath.Join(dir, "wal", "0000000000000001.wal"), data, 0o600)
		return dir
	}
	dir := write(append(append([]byte(nil), v1...), 0, 0, 1))
	s, err := openStorage(dir, testPrealloc)
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := s.Raft().LastIndex(); last != 5 {
		t.Fatalf("last index %d, want 5", last)
	}
	if err := s.Save(&raftpb.HardState{Term: proto.Uint64(1), Commit: proto.Uint64(6)}, entries(6, 1, 8), nil, true); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got, err := lastIndexAfterOpen(t, dir); err != nil || got != 6 {
		t.Fatalf("reopened: %d, %v", got, err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "wal", "*.wal")); len(segs) != 2 {
		t.Fatalf("%d segments, want the version 1 one and a new one", len(segs))
	}

	bad := append([]byte(nil), v1...)
	bad[30] ^= 1
	_, err = lastIndexAfterOpen(t, write(bad))
	wantRefused(t, err, "0000000000000001.wal", 0, "version 1 record damaged")

	var short []byte
	for _, e := range entries(1, 3, 20) {
		short = append(short, legacyRecord(recEntry, e)...)
	}
	_, err = lastIndexAfterOpen(t, write(append(short, hsRec...)))
	if !errors.Is(err, ErrWALDamaged) || !strings.Contains(err.Error(), "committed") {
		t.Fatalf("commit index past the log: %v", err)
	}
}

// A segment or snapshot in a newer format is refused, naming both
// versions, and left as it was.
func TestWALNewerFormatsAreRefused(t *testing.T) {
	dir := t.TempDir()
	segPath, _ := writeTestLog(t, dir, 2)
	data, _ := os.ReadFile(segPath)
	newer := append([]byte(nil), data...)
	binary.BigEndian.PutUint32(newer[9+12:9+16], walVersion+1)
	binary.BigEndian.PutUint32(newer[4:8], crc32.Update(crc32.Checksum(newer[8:9], crcTable), crcTable, newer[9:9+segHeaderPayload]))
	os.WriteFile(segPath, newer, 0o600)
	_, err := lastIndexAfterOpen(t, dir)
	if !errors.Is(err, ErrWALNewer) || !strings.Contains(err.Error(), "version 3") || !strings.Contains(err.Error(), "1 to 2") {
		t.Fatalf("newer WAL: %v", err)
	}
	if after, _ := os.ReadFile(segPath); string(after) != string(newer) {
		t.Fatal("the refused segment was changed")
	}
	os.WriteFile(segPath, data, 0o600)

	snap := &raftpb.Snapshot{Data: []byte("state"), Metadata: &raftpb.SnapshotMetadata{Index: proto.Uint64(1), Term: proto.Uint64(1), ConfState: &raftpb.ConfState{Voters: []uint64{1}}}}
	enc, err := encodeSnapshotFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	snapPath := filepath.Join(dir, "snap", "latest.snap")
	binary.BigEndian.PutUint32(enc[8:12], snapVersion+1)
	os.WriteFile(snapPath, enc, 0o600)
	if _, err := lastIndexAfterOpen(t, dir); err == nil || !strings.Contains(err.Error(), "version 3") || !strings.Contains(err.Error(), "1 to 2") {
		t.Fatalf("newer snapshot: %v", err)
	}
	binary.BigEndian.PutUint32(enc[8:12], snapVersion)
	enc[len(enc)-1] ^= 1
	os.WriteFile(snapPath, enc, 0o600)
	if _, err := lastIndexAfterOpen(t, dir); !errors.Is(err, ErrSnapshotDamaged) {
		t.Fatalf("damaged snapshot: %v", err)
	}
	// Version 1, the bare message, is still read.
	v1, _ := proto.Marshal(snap)
	os.WriteFile(snapPath, v1, 0o600)
	s, err := openStorage(dir, testPrealloc)
	if err != nil {
		t.Fatalf("version 1 snapshot: %v", err)
	}
	defer s.Close()
	if got, _ := s.Raft().Snapshot(); string(got.GetData()) != "state" {
		t.Fatalf("version 1 snapshot read as %v", got)
	}
}
