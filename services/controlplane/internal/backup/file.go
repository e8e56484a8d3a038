// Package backup moves the control plane's state out and back in: the
// snapshot file format (Encode, Read), a new cluster prepared from a file
// (Restore), a one-member cluster made from a surviving member's data
// (Recover), and snapshots written on a schedule by the leader (Scheduler).
//
// A snapshot file is, in order:
//
//	magic          "HIVEMIND-SNAPSHOT\n" (18 bytes)
//	version        uint32, big endian: the format version
//	header length  uint32, big endian
//	header         hivemind.v1.SnapshotHeader
//	state          hivemind.raft.v1.Snapshot, header.state_bytes long
//	trailer        SHA-256 of every byte before it (32 bytes)
//
// The version comes before anything that could change between versions, so
// a binary that does not know it says so instead of misreading the rest.
package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// FormatVersion is the snapshot file format this binary writes and reads.
const FormatVersion = 1

// MaxHeaderBytes bounds the header, so a damaged length is caught before a
// large allocation.
const MaxHeaderBytes = 1 << 20

var magic = []byte("HIVEMIND-SNAPSHOT\n")

// prefixLen is the fixed part before the header.
var prefixLen = len(magic) + 8

// ErrDamaged is wrapped by every error about a file that is not a whole,
// intact snapshot of a version this binary reads.
var ErrDamaged = errors.New("snapshot file refused")

func damaged(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDamaged, fmt.Sprintf(format, args...))
}

// Encode writes a snapshot file of state with hdr to w and returns the
// SHA-256 trailer it wrote. hdr's format_version and state_bytes are set
// here.
func Encode(w io.Writer, hdr *hivemindv1.SnapshotHeader, state []byte) ([]byte, error) {
	hdr.FormatVersion = FormatVersion
	hdr.StateBytes = uint64(len(state))
	hb, err := hdr.MarshalVT()
	if err != nil {
		return nil, err
	}
	if len(hb) > MaxHeaderBytes {
		return nil, fmt.Errorf("snapshot header is %d bytes, more than %d", len(hb), MaxHeaderBytes)
	}
	h := sha256.New()
	mw := io.MultiWriter(w, h)
	prefix := make([]byte, 0, prefixLen)
	prefix = append(prefix, magic...)
	prefix = binary.BigEndian.AppendUint32(prefix, FormatVersion)
	prefix = binary.BigEndian.AppendUint32(prefix, uint32(len(hb)))
	for _, b := range [][]byte{prefix, hb, state} {
		if _, err := mw.Write(b); err != nil {
			return nil, err
		}
	}
	sum := h.Sum(nil)
	if _, err := w.Write(sum); err != nil {
		return nil, err
	}
	return sum, nil
}

// ReadFile reads and checks the snapshot file at path; see Decode.
func ReadFile(path string) (*hivemindv1.SnapshotHeader, *raftv1.Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	hdr, snap, err := Decode(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return hdr, snap, nil
}

// Decode checks a whole snapshot file — magic, version, lengths, checksum,
// then the state's own consistency is left to fsm.Restore — and returns its
// header and state. Every refusal wraps ErrDamaged and says what is wrong.
func Decode(b []byte) (*hivemindv1.SnapshotHeader, *raftv1.Snapshot, error) {
	if len(b) < len(magic) || !bytes.Equal(b[:len(magic)], magic) {
		return nil, nil, damaged("not a hivemind snapshot (no %q at the start)", bytes.TrimSpace(magic))
	}
	if len(b) < prefixLen {
		return nil, nil, damaged("truncated: %d bytes, not even a header", len(b))
	}
	if v := binary.BigEndian.Uint32(b[len(magic):]); v != FormatVersion {
		return nil, nil, damaged("format version %d; this binary reads version %d", v, FormatVersion)
	}
	hl := int(binary.BigEndian.Uint32(b[len(magic)+4:]))
	if hl > MaxHeaderBytes {
		return nil, nil, damaged("header length %d is more than %d", hl, MaxHeaderBytes)
	}
	if len(b) < prefixLen+hl+sha256.Size {
		return nil, nil, damaged("truncated: %d bytes, the header alone needs %d", len(b), prefixLen+hl+sha256.Size)
	}
	body, trailer := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], trailer) {
		// A cut file fails here too; say so when the header tells.
		hdr := &hivemindv1.SnapshotHeader{}
		if hdr.UnmarshalVT(b[prefixLen:prefixLen+hl]) == nil && hdr.GetStateBytes() > 0 {
			if want := uint64(prefixLen+hl+sha256.Size) + hdr.GetStateBytes(); want != uint64(len(b)) {
				return nil, nil, damaged("truncated or extended: %d bytes, the header says %d", len(b), want)
			}
		}
		return nil, nil, damaged("SHA-256 mismatch: the file is damaged")
	}
	hdr := &hivemindv1.SnapshotHeader{}
	if err := hdr.UnmarshalVT(b[prefixLen : prefixLen+hl]); err != nil {
		return nil, nil, damaged("header: %v", err)
	}
	if hdr.GetFormatVersion() != FormatVersion {
		return nil, nil, damaged("header says format version %d, the file's prefix %d", hdr.GetFormatVersion(), FormatVersion)
	}
	state := body[prefixLen+hl:]
	if uint64(len(state)) != hdr.GetStateBytes() {
		return nil, nil, damaged("state is %d bytes, the header says %d", len(state), hdr.GetStateBytes())
	}
	snap := &raftv1.Snapshot{}
	if err := snap.UnmarshalVT(state); err != nil {
		return nil, nil, damaged("state: %v", err)
	}
	if snap.GetRevision() != hdr.GetRevision() || snap.GetEpoch() != hdr.GetEpoch() {
		return nil, nil, damaged("state is at revision %d epoch %d, the header says revision %d epoch %d",
			snap.GetRevision(), snap.GetEpoch(), hdr.GetRevision(), hdr.GetEpoch())
	}
	return hdr, snap, nil
}

// Verifier checks a snapshot file as it is received: Write its bytes, then
// Check the trailer the sender announced.
type Verifier struct {
	h hash.Hash
	n int64
	// last holds the final sha256.Size bytes seen, which are the trailer
	// once the stream is over.
	last []byte
}

// NewVerifier returns an empty Verifier.
func NewVerifier() *Verifier { return &Verifier{h: sha256.New()} }

// Write hashes everything but what may turn out to be the trailer.
func (v *Verifier) Write(p []byte) (int, error) {
	v.n += int64(len(p))
	buf := append(v.last, p...)
	if len(buf) > sha256.Size {
		v.h.Write(buf[:len(buf)-sha256.Size])
		buf = append([]byte(nil), buf[len(buf)-sha256.Size:]...)
	}
	v.last = buf
	return len(p), nil
}

// Check says whether the bytes written end with a trailer that matches
// them and equals announced.
func (v *Verifier) Check(announced []byte) error {
	if len(v.last) != sha256.Size {
		return damaged("truncated: %d bytes received", v.n)
	}
	sum := v.h.Sum(nil)
	if !bytes.Equal(sum, v.last) || !bytes.Equal(sum, announced) {
		return damaged("SHA-256 mismatch after %d bytes received", v.n)
	}
	return nil
}
