// Package ticket is the proof that a node was admitted to the cluster by
// the control plane. The control plane issues one with every committed
// join; the node carries it in its gossip metadata, and every member checks
// it before letting the node into its memberlist. A ticket names the node,
// its generation and the cluster epoch, and is signed with a key derived
// from the cluster secret (secret.PurposeTicket), so any member can check
// it without asking the control plane.
package ticket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Ticket is the signed content.
type Ticket struct {
	// Name of the admitted node.
	Name string
	// Epoch of the cluster the ticket is valid for.
	Epoch uint64
	// Incarnation (generation) of the node when it joined.
	Incarnation uint64
	// Revision that committed the join.
	Revision int64
	// IssuedAt on the issuer's clock; informational.
	IssuedAt time.Time
}

const (
	version = 1
	macLen  = 32
	// MaxNameLength keeps a ticket well inside memberlist's 512-byte
	// metadata limit.
	MaxNameLength = 253
)

// Errors a check can return; wrapped with details.
var (
	ErrMalformed = errors.New("malformed ticket")
	ErrSignature = errors.New("ticket signature does not verify")
	ErrName      = errors.New("ticket is for another node")
	ErrEpoch     = errors.New("ticket is for another epoch")
)

// Sign encodes t and signs it with key.
func Sign(key []byte, t Ticket) ([]byte, error) {
	if t.Name == "" || len(t.Name) > MaxNameLength {
		return nil, fmt.Errorf("%w: name must be 1..%d bytes", ErrMalformed, MaxNameLength)
	}
	b := make([]byte, 0, 1+1+len(t.Name)+8+8+8+8+macLen)
	b = append(b, version, byte(len(t.Name)))
	b = append(b, t.Name...)
	b = binary.BigEndian.AppendUint64(b, t.Epoch)
	b = binary.BigEndian.AppendUint64(b, t.Incarnation)
	b = binary.BigEndian.AppendUint64(b, uint64(t.Revision))
	b = binary.BigEndian.AppendUint64(b, uint64(t.IssuedAt.UnixNano()))
	return append(b, mac(key, b)...), nil
}

// Parse checks the signature and decodes the ticket, without checking
// name or epoch.
func Parse(key, raw []byte) (Ticket, error) {
	if len(raw) < 2+32+macLen || raw[0] != version {
		return Ticket{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(raw))
	}
	n := int(raw[1])
	if len(raw) != 2+n+32+macLen {
		return Ticket{}, fmt.Errorf("%w: length %d for a %d-byte name", ErrMalformed, len(raw), n)
	}
	body, sig := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	if !hmac.Equal(sig, mac(key, body)) {
		return Ticket{}, ErrSignature
	}
	p := body[2+n:]
	return Ticket{
		Name:        string(body[2 : 2+n]),
		Epoch:       binary.BigEndian.Uint64(p[0:8]),
		Incarnation: binary.BigEndian.Uint64(p[8:16]),
		Revision:    int64(binary.BigEndian.Uint64(p[16:24])),
		IssuedAt:    time.Unix(0, int64(binary.BigEndian.Uint64(p[24:32]))),
	}, nil
}

// Verify parses raw and checks that it admits name in epoch.
func Verify(key, raw []byte, name string, epoch uint64) (Ticket, error) {
	t, err := Parse(key, raw)
	if err != nil {
		return Ticket{}, err
	}
	if t.Name != name {
		return Ticket{}, fmt.Errorf("%w: ticket names %q, node is %q", ErrName, t.Name, name)
	}
	if t.Epoch != epoch {
		return Ticket{}, fmt.Errorf("%w: ticket epoch %d, cluster epoch %d", ErrEpoch, t.Epoch, epoch)
	}
	return t, nil
}

func mac(key, b []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(b)
	return h.Sum(nil)
}
