package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"

	"github.com/hivemind/hivemind/pkg/ticket"
)

// MaxMetaSize is memberlist's limit on node metadata, in bytes. A ticket for
// a name of ticket.MaxNameLength bytes takes 319 of them, which leaves
// about 190 for roles and the gRPC address.
const MaxMetaSize = memberlist.MetaMaxSize

const (
	maxNameLength = ticket.MaxNameLength
	metaVersion   = 1
	flagLeaving   = 1 << 0
)

// Meta is what a node announces about itself in gossip.
type Meta struct {
	// Roles the node performs (controlplane, host, dns, notifier).
	Roles []string
	// GRPCAddr is the address of the node's gRPC API.
	GRPCAddr string
	// Ticket is the admission ticket the control plane issued.
	Ticket []byte
	// Epoch the ticket is for.
	Epoch uint64
	// Incarnation is the node's persisted generation, raised on every
	// start (not memberlist's incarnation, which restarts from zero).
	Incarnation uint64
	// Leaving is set just before a graceful leave, so that members record
	// the node as left rather than dead.
	Leaving bool
}

// ErrMeta is returned for metadata that cannot be encoded or decoded.
var ErrMeta = errors.New("bad node metadata")

// Encode returns m in its wire form, or an error wrapping ErrMeta when it
// does not fit MaxMetaSize.
func (m Meta) Encode() ([]byte, error) {
	if len(m.Roles) > 255 {
		return nil, fmt.Errorf("%w: %d roles", ErrMeta, len(m.Roles))
	}
	if len(m.GRPCAddr) > 255 {
		return nil, fmt.Errorf("%w: gRPC address of %d bytes", ErrMeta, len(m.GRPCAddr))
	}
	var flags byte
	if m.Leaving {
		flags |= flagLeaving
	}
	b := []byte{metaVersion, flags}
	b = binary.AppendUvarint(b, m.Incarnation)
	b = binary.AppendUvarint(b, m.Epoch)
	b = append(b, byte(len(m.Roles)))
	for _, r := range m.Roles {
		if len(r) > 255 {
			return nil, fmt.Errorf("%w: role of %d bytes", ErrMeta, len(r))
		}
		b = append(b, byte(len(r)))
		b = append(b, r...)
	}
	b = append(b, byte(len(m.GRPCAddr)))
	b = append(b, m.GRPCAddr...)
	b = binary.AppendUvarint(b, uint64(len(m.Ticket)))
	b = append(b, m.Ticket...)
	if len(b) > MaxMetaSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMeta, len(b), MaxMetaSize)
	}
	return b, nil
}

// DecodeMeta parses the wire form of Meta.
func DecodeMeta(b []byte) (Meta, error) {
	d := decoder{b: b}
	if v := d.byte(); v != metaVersion {
		return Meta{}, fmt.Errorf("%w: version %d", ErrMeta, v)
	}
	var m Meta
	m.Leaving = d.byte()&flagLeaving != 0
	m.Incarnation = d.uvarint()
	m.Epoch = d.uvarint()
	if n := int(d.byte()); n > 0 {
		m.Roles = make([]string, 0, n)
		for range n {
			m.Roles = append(m.Roles, string(d.bytes(uint64(d.byte()))))
		}
	}
	m.GRPCAddr = string(d.bytes(uint64(d.byte())))
	if t := d.bytes(d.uvarint()); len(t) > 0 {
		m.Ticket = append([]byte(nil), t...)
	}
	if d.err != nil {
		return Meta{}, d.err
	}
	if len(d.b) != 0 {
		return Meta{}, fmt.Errorf("%w: %d trailing bytes", ErrMeta, len(d.b))
	}
	return m, nil
}

// decoder reads fields until the first error, which it keeps.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated", ErrMeta)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if uint64(len(d.b)) < n {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
