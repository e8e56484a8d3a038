package raftnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"path/filepath"
)

// The WAL's on-disk format, version 2.
//
// A segment starts with a header in the framing of version 1 (length,
// CRC-32C, type, payload) whose type version 1 never wrote, so a binary
// that reads only version 1 refuses the segment instead of dropping it as
// a torn record. Its payload holds the magic, the format version and the
// size the segment was preallocated to. The file is preallocated (zero
// filled) to that size before it is put in place, so appending never
// changes its size, and a segment shorter than its preallocated size was
// cut by something other than a crash.
//
// After the header come batches, one per write, each followed by one
// fdatasync. A batch starts at a 16-byte aligned offset with a 16-byte
// header: body length, CRC-32C of the body, kind, and CRC-32C of those
// twelve bytes. Being aligned, a header never straddles a disk sector, so
// a crash leaves it whole or all zero. The body is a run of records
// (4-byte length, 1-byte type, payload); it is padded with zeros to the
// next 16-byte boundary. A segment that a newer one follows ends with a
// seal batch, written once the newer segment is durable: a missing newest
// segment is then seen, not taken for the end of the log.
//
// Telling a torn write from damage. A crash can only hurt the write that
// was not yet synced, which is the last batch of the newest segment, and
// in a preallocated file it can only leave sectors of it unwritten (zero).
// So a bad batch is a torn tail, and is dropped, when it is in the newest
// segment, no intact batch follows it, and it is either all zero or a body
// with a whole zero sector (or a body cut by the end of a file that this
// write was extending). Anything else - a checksum mismatch with no
// unwritten sector, an intact batch after a bad one, a damaged header, a
// segment shorter than preallocated, a gap in the segment numbers, a
// missing newest segment - is damage: the member refuses to start and the
// error names the file and the offset.
const (
	walVersion = 2
	walMagic   = "hivemind-wal" // 12 bytes

	recSegment byte = 3 // the segment header's record type

	segHeaderPayload = 24 // magic, version, preallocated size
	segHeaderLen     = 48 // 9 + 24, padded to 16
	batchHeaderLen   = 16
	sectorSize       = 512

	batchData uint32 = 1
	batchSeal uint32 = 2
)

// ErrWALDamaged is returned (wrapped, naming the file and offset) when a
// segment is damaged in a way a crash cannot explain.
var ErrWALDamaged = errors.New("WAL damaged")

// ErrWALNewer is returned for a segment in a newer format than this binary
// reads.
var ErrWALNewer = errors.New("WAL written by a newer version")

func align16(n int) int { return (n + 15) &^ 15 }

func damaged(path string, off int, format string, args ...any) error {
	return fmt.Errorf("raft storage: %w: %s at offset %d: %s", ErrWALDamaged, filepath.Base(path), off, fmt.Sprintf(format, args...))
}

// segmentHeader is the first segHeaderLen bytes of a new segment.
func segmentHeader(prealloc int64) []byte {
	b := make([]byte, segHeaderLen)
	p := b[9 : 9+segHeaderPayload]
	copy(p, walMagic)
	binary.BigEndian.PutUint32(p[12:16], walVersion)
	binary.BigEndian.PutUint64(p[16:24], uint64(prealloc))
	binary.BigEndian.PutUint32(b[0:4], segHeaderPayload)
	b[8] = recSegment
	binary.BigEndian.PutUint32(b[4:8], crc32.Update(crc32.Checksum(b[8:9], crcTable), crcTable, p))
	return b
}

// parseSegmentHeader returns the segment's format version (1 for a
// segment without a header, as version 1 wrote them) and its
// preallocated size.
func parseSegmentHeader(path string, data []byte) (int, int64, error) {
	if len(data) < 9 || data[8] != recSegment {
		return 1, 0, nil
	}
	size := int(binary.BigEndian.Uint32(data[0:4]))
	if size < 16 || 9+size > len(data) {
		return 0, 0, damaged(path, 0, "segment header of %d bytes", size)
	}
	p := data[9 : 9+size]
	if crc32.Update(crc32.Checksum(data[8:9], crcTable), crcTable, p) != binary.BigEndian.Uint32(data[4:8]) {
		return 0, 0, damaged(path, 0, "segment header checksum mismatch")
	}
	if string(p[:12]) != walMagic {
		return 0, 0, damaged(path, 0, "not a WAL segment header")
	}
	v := int(binary.BigEndian.Uint32(p[12:16]))
	if v > walVersion {
		return 0, 0, fmt.Errorf("raft storage: %w: %s has WAL format version %d; this binary reads versions 1 to %d", ErrWALNewer, filepath.Base(path), v, walVersion)
	}
	if v != walVersion || size < segHeaderPayload {
		return 0, 0, damaged(path, 0, "segment header names version %d", v)
	}
	return v, int64(binary.BigEndian.Uint64(p[16:24])), nil
}

// putBatchHeader fills the 16-byte header in front of body.
func putBatchHeader(h []byte, kind uint32, body []byte) {
	binary.BigEndian.PutUint32(h[0:4], uint32(len(body)))
	binary.BigEndian.PutUint32(h[4:8], crc32.Checksum(body, crcTable))
	binary.BigEndian.PutUint32(h[8:12], kind)
	binary.BigEndian.PutUint32(h[12:16], crc32.Checksum(h[0:12], crcTable))
}

func validBatchHeader(h []byte) bool {
	return crc32.Checksum(h[0:12], crcTable) == binary.BigEndian.Uint32(h[12:16])
}

var zeroPage [4096]byte

func allZero(b []byte) bool { return nextNonZero(b, 0) == len(b) }

// nextNonZero is the offset of the first non-zero byte of b at or after
// from, len(b) if there is none. Whole pages are compared at once: a
// preallocated segment is mostly zeros.
func nextNonZero(b []byte, from int) int {
	i := from
	for i+len(zeroPage) <= len(b) && bytes.Equal(b[i:i+len(zeroPage)], zeroPage[:]) {
		i += len(zeroPage)
	}
	for ; i < len(b); i++ {
		if b[i] != 0 {
			return i
		}
	}
	return len(b)
}

// zeroSector reports whether the part of [start, end) inside some disk
// sector is all zero: that sector was never written.
func zeroSector(data []byte, start, end int) bool {
	for s := start - start%sectorSize; s < end; s += sectorSize {
		if allZero(data[max(s, start):min(s+sectorSize, end)]) {
			return true
		}
	}
	return false
}

// intactBatchAfter reports whether a whole, checksummed batch starts at
// some aligned offset at or after from: a write that was synced, so
// nothing before it can be a torn tail.
func intactBatchAfter(data []byte, from int) bool {
	for y := align16(from); y+batchHeaderLen <= len(data); y += 16 {
		if nz := nextNonZero(data, y); nz-y >= batchHeaderLen {
			y = nz&^15 - 16 // skip the zeros up to the slot holding nz
			continue
		}
		h := data[y : y+batchHeaderLen]
		if !validBatchHeader(h) {
			continue
		}
		n := int(binary.BigEndian.Uint32(h[0:4]))
		if n <= len(data)-y-batchHeaderLen && crc32.Checksum(data[y+batchHeaderLen:y+batchHeaderLen+n], crcTable) == binary.BigEndian.Uint32(h[4:8]) {
			return true
		}
	}
	return false
}

// scannedSegment is what reading one segment found.
type walBatch struct {
	off  int
	body []byte
}

type scannedSegment struct {
	batches []walBatch // the data batches, in order
	sealed  bool       // a seal batch ends it
	end     int        // where the next batch goes (the start of a torn tail)
	torn    bool       // bytes from end on are a torn write to be cleared
	dirty   int        // with torn: the end of the non-zero bytes to clear
}

// tornAt marks the segment torn from off: what was written from there on
// is to be cleared.
func (sc *scannedSegment) tornAt(data []byte, off int) {
	sc.end, sc.torn = off, true
	sc.dirty = len(data)
	for sc.dirty > off {
		from := max(off, sc.dirty-len(zeroPage))
		if !bytes.Equal(data[from:sc.dirty], zeroPage[:sc.dirty-from]) {
			break
		}
		sc.dirty = from
	}
}

// scanSegment reads the batches of a version 2 segment. last says whether
// it is the newest segment, the only one a crash can have left torn.
func scanSegment(path string, data []byte, prealloc int64, last bool) (scannedSegment, error) {
	var sc scannedSegment
	if int64(len(data)) < prealloc {
		return sc, damaged(path, len(data), "the segment ends here, but it was preallocated to %d bytes: it was cut", prealloc)
	}
	// Only a write that extended the file past its preallocated size can
	// have been cut by the end of the file.
	extended := last && int64(len(data)) > prealloc
	off := segHeaderLen
	for {
		sc.end = off
		rem := len(data) - off
		if rem == 0 {
			return sc, nil
		}
		if rem < batchHeaderLen {
			if extended {
				sc.tornAt(data, off)
				return sc, nil
			}
			return sc, damaged(path, off, "%d stray bytes at the end", rem)
		}
		h := data[off : off+batchHeaderLen]
		if allZero(h) {
			// The end of what was written, or a batch whose header was
			// never written; in either case nothing synced may follow.
			if nextNonZero(data, off) == len(data) {
				return sc, nil
			}
			if !last || intactBatchAfter(data, off+batchHeaderLen) {
				return sc, damaged(path, off, "zeroed batch header with data after it")
			}
			sc.tornAt(data, off)
			return sc, nil
		}
		if !validBatchHeader(h) {
			return sc, damaged(path, off, "batch header checksum mismatch")
		}
		n := int(binary.BigEndian.Uint32(h[0:4]))
		bodyStart := off + batchHeaderLen
		if n > len(data)-bodyStart {
			if extended {
				sc.tornAt(data, off)
				return sc, nil
			}
			return sc, damaged(path, off, "batch of %d bytes runs past the end of the file", n)
		}
		body := data[bodyStart : bodyStart+n]
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(h[4:8]) {
			if last && zeroSector(data, bodyStart, bodyStart+n) && !intactBatchAfter(data, bodyStart+n) {
				sc.tornAt(data, off)
				return sc, nil
			}
			return sc, damaged(path, off, "batch checksum mismatch")
		}
		next := min(align16(bodyStart+n), len(data))
		switch binary.BigEndian.Uint32(h[8:12]) {
		case batchData:
			sc.batches = append(sc.batches, walBatch{off, body})
		case batchSeal:
			sc.sealed, sc.end = true, next
			return sc, nil
		default:
			return sc, damaged(path, off, "unknown batch kind %d", binary.BigEndian.Uint32(h[8:12]))
		}
		off = next
	}
}

// splitRecords calls f for each record of a batch body.
func splitRecords(path string, batchOff int, body []byte, f func(typ byte, payload []byte) error) error {
	for off := 0; off < len(body); {
		if len(body)-off < 5 {
			return damaged(path, batchOff, "malformed record in batch")
		}
		n := int(binary.BigEndian.Uint32(body[off : off+4]))
		if n > len(body)-off-5 {
			return damaged(path, batchOff, "record of %d bytes overruns its batch", n)
		}
		if err := f(body[off+4], body[off+5:off+5+n]); err != nil {
			return err
		}
		off += 5 + n
	}
	return nil
}

// scanLegacySegment reads a version 1 segment: records of 4-byte length,
// CRC-32C of type and payload, type and payload, unpadded. In the newest
// segment only the last record may be bad (a torn write: cut short, or a
// checksum mismatch with nothing after it); anything else is damage.
func scanLegacySegment(path string, data []byte, last bool, f func(typ byte, payload []byte) error) (end int, torn bool, err error) {
	off := 0
	for off < len(data) {
		rem := len(data) - off
		if rem < 9 {
			if last {
				return off, true, nil
			}
			return 0, false, damaged(path, off, "record header cut short")
		}
		size := int(binary.BigEndian.Uint32(data[off : off+4]))
		if size > rem-9 {
			if last {
				return off, true, nil
			}
			return 0, false, damaged(path, off, "record of %d bytes runs past the end of the file", size)
		}
		payload := data[off+9 : off+9+size]
		if crc32.Update(crc32.Checksum(data[off+8:off+9], crcTable), crcTable, payload) != binary.BigEndian.Uint32(data[off+4:off+8]) {
			if last && off+9+size == len(data) {
				return off, true, nil
			}
			return 0, false, damaged(path, off, "record checksum mismatch")
		}
		if err := f(data[off+8], payload); err != nil {
			return 0, false, err
		}
		off += 9 + size
	}
	return off, false, nil
}
