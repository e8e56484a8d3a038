package hlc

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// ID is a 128-bit event id: the HLC timestamp (8 bytes, big-endian), then
// 6 bytes of the SHA-256 of the node name, then a 2-byte sequence number
// within one raft entry. Byte order is sort order, so ids from different
// nodes order like their clocks.
type ID [16]byte

// NewID builds the id of the seq-th event stamped ts by node.
func NewID(ts Timestamp, node string, seq uint16) ID {
	var id ID
	binary.BigEndian.PutUint64(id[0:8], uint64(ts))
	h := sha256.Sum256([]byte(node))
	copy(id[8:14], h[:6])
	binary.BigEndian.PutUint16(id[14:16], seq)
	return id
}

// Timestamp is the HLC timestamp inside the id.
func (id ID) Timestamp() Timestamp { return Timestamp(binary.BigEndian.Uint64(id[0:8])) }

// Seq is the sequence number inside the id.
func (id ID) Seq() uint16 { return binary.BigEndian.Uint16(id[14:16]) }

// Compare orders ids: -1, 0 or +1.
func (id ID) Compare(other ID) int { return bytes.Compare(id[:], other[:]) }

// Crockford's base32 alphabet: no I, L, O, U, so ids read aloud unambiguously.
const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// EncodedLen is the length of an id's text form.
const EncodedLen = 26

// String is the 26-character Crockford base32 form. 26×5 = 130 bits, so the
// first character carries only the top 3 bits and is at most '7'; text order
// equals numeric order.
func (id ID) String() string {
	var out [EncodedLen]byte
	hi := binary.BigEndian.Uint64(id[0:8])
	lo := binary.BigEndian.Uint64(id[8:16])
	for i := EncodedLen - 1; i >= 0; i-- {
		out[i] = alphabet[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

var decode = func() [256]byte {
	var d [256]byte
	for i := range d {
		d[i] = 0xff
	}
	for i := 0; i < len(alphabet); i++ {
		d[alphabet[i]] = byte(i)
		d[alphabet[i]|0x20] = byte(i) // lower case reads the same
	}
	return d
}()

// ParseID parses the text form. It accepts lower case and refuses anything
// else that is not a canonical id: wrong length, characters outside the
// alphabet, or a first character above '7'.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != EncodedLen {
		return id, fmt.Errorf("hlc: id %q: want %d characters, got %d", s, EncodedLen, len(s))
	}
	var hi, lo uint64
	for i := 0; i < EncodedLen; i++ {
		v := decode[s[i]]
		if v == 0xff {
			return id, fmt.Errorf("hlc: id %q: invalid character %q at %d", s, s[i], i)
		}
		if i == 0 && v > 7 {
			return id, fmt.Errorf("hlc: id %q: first character must be 0-7", s)
		}
		hi = hi<<5 | lo>>59
		lo = lo<<5 | uint64(v)
	}
	binary.BigEndian.PutUint64(id[0:8], hi)
	binary.BigEndian.PutUint64(id[8:16], lo)
	return id, nil
}
