// Package ticket is the proof that a node was admitted to the cluster by
// the control plane. The control-plane member that answers a committed
// join issues one; the node carries it in its gossip metadata, and every
// member checks it before letting the node into its memberlist. A ticket
// names the node, its generation, the cluster epoch and the issuer, and is
// signed with the issuer's node key (ed25519), so any member checks it
// with the public key the registry binds to the issuer, and nobody without
// a control-plane member's key — the cluster secret is not enough — can
// make one.
package ticket

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Ticket is the signed content.
type Ticket struct {
	// Name of the admitted node.
	Name string
	// Issuer is the control-plane member that signed the ticket.
	Issuer string
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
	version = 2
	sigLen  = ed25519.SignatureSize
	// MaxNameLength bounds the node's name, and MaxIssuerLength the
	// issuer's, keeping a ticket well inside memberlist's 512-byte
	// metadata limit.
	MaxNameLength   = 253
	MaxIssuerLength = 63
	// label starts what is signed, so a ticket signature is valid for
	// nothing else a node key signs.
	label = "hivemind ticket v2\x00"
)

// Errors a check can return; wrapped with details.
var (
	ErrMalformed = errors.New("malformed ticket")
	ErrIssuer    = errors.New("ticket issuer is not a control-plane member with a known key")
	ErrSignature = errors.New("ticket signature does not verify")
	ErrName      = errors.New("ticket is for another node")
	ErrEpoch     = errors.New("ticket is for another epoch")
)

// KeyOf returns the public key of a control-plane member that may issue
// tickets, and whether there is one.
type KeyOf func(issuer string) (ed25519.PublicKey, bool)

// Sign encodes t and signs it with sign, the issuer's node key.
func Sign(sign func(msg []byte) []byte, t Ticket) ([]byte, error) {
	if t.Name == "" || len(t.Name) > MaxNameLength {
		return nil, fmt.Errorf("%w: name must be 1..%d bytes", ErrMalformed, MaxNameLength)
	}
	if t.Issuer == "" || len(t.Issuer) > MaxIssuerLength {
		return nil, fmt.Errorf("%w: issuer must be 1..%d bytes", ErrMalformed, MaxIssuerLength)
	}
	b := make([]byte, 0, 3+len(t.Name)+len(t.Issuer)+32+sigLen)
	b = append(b, version, byte(len(t.Name)))
	b = append(b, t.Name...)
	b = append(b, byte(len(t.Issuer)))
	b = append(b, t.Issuer...)
	b = binary.BigEndian.AppendUint64(b, t.Epoch)
	b = binary.BigEndian.AppendUint64(b, t.Incarnation)
	b = binary.BigEndian.AppendUint64(b, uint64(t.Revision))
	b = binary.BigEndian.AppendUint64(b, uint64(t.IssuedAt.UnixNano()))
	return append(b, sign(signed(b))...), nil
}

func signed(body []byte) []byte { return append([]byte(label), body...) }

// Parse decodes the ticket and checks its signature with the issuer's key,
// without checking name or epoch.
func Parse(raw []byte, keyOf KeyOf) (Ticket, error) {
	if len(raw) < 3+32+sigLen || raw[0] != version {
		return Ticket{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(raw))
	}
	n := int(raw[1])
	if len(raw) < 3+n+32+sigLen {
		return Ticket{}, fmt.Errorf("%w: length %d for a %d-byte name", ErrMalformed, len(raw), n)
	}
	m := int(raw[2+n])
	if len(raw) != 3+n+m+32+sigLen {
		return Ticket{}, fmt.Errorf("%w: length %d for a %d-byte name and a %d-byte issuer", ErrMalformed, len(raw), n, m)
	}
	body, sig := raw[:len(raw)-sigLen], raw[len(raw)-sigLen:]
	issuer := string(body[3+n : 3+n+m])
	pub, ok := keyOf(issuer)
	if !ok || len(pub) != ed25519.PublicKeySize {
		return Ticket{}, fmt.Errorf("%w: %q", ErrIssuer, issuer)
	}
	if !ed25519.Verify(pub, signed(body), sig) {
		return Ticket{}, ErrSignature
	}
	p := body[3+n+m:]
	return Ticket{
		Name:        string(body[2 : 2+n]),
		Issuer:      issuer,
		Epoch:       binary.BigEndian.Uint64(p[0:8]),
		Incarnation: binary.BigEndian.Uint64(p[8:16]),
		Revision:    int64(binary.BigEndian.Uint64(p[16:24])),
		IssuedAt:    time.Unix(0, int64(binary.BigEndian.Uint64(p[24:32]))),
	}, nil
}

// Verify parses raw and checks that it admits name in epoch.
func Verify(raw []byte, keyOf KeyOf, name string, epoch uint64) (Ticket, error) {
	t, err := Parse(raw, keyOf)
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

// Keys is a fixed KeyOf: issuers' public keys by name (tests, tools).
func Keys(keys map[string]ed25519.PublicKey) KeyOf {
	return func(issuer string) (ed25519.PublicKey, bool) {
		k, ok := keys[issuer]
		return k, ok
	}
}
