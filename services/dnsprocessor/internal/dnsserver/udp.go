package dnsserver

import (
	"errors"
	"net"

	"github.com/miekg/dns"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const (
	// maxQuerySize bounds a UDP read. Queries are small; one larger than
	// this is cut short, fails to parse, and gets FORMERR.
	maxQuerySize = 4096
	// batchSize is how many packets one recvmmsg reads and one sendmmsg
	// writes: a system call per packet each way was most of the
	// processor's CPU (bench.md, dns.qps).
	batchSize = 64
	// replyBufSize is the buffer a UDP answer is packed into; a larger
	// one (an EDNS size configured above it) gets a buffer of its own.
	replyBufSize = 2048
)

// batchConn reads and writes many datagrams per system call. Both
// ipv4.PacketConn and ipv6.PacketConn are one (their Message is the same
// type).
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// udpLoop serves one UDP socket from one goroutine: read a batch, answer
// each query in it, write the answers as a batch. Its buffers and request
// message are reused from batch to batch.
type udpLoop struct {
	conn    batchConn
	replier Replier
	// wildcard is set when the socket is bound to an unspecified address:
	// each answer must then leave from the address its query was sent to,
	// which the kernel tells per packet in a control message.
	wildcard bool
	v6       bool // the socket's family; its control messages are IPv6 ones

	in    []ipv4.Message
	out   []ipv4.Message
	bufs  [][]byte // one reply buffer per slot of out
	req   dns.Msg
	cache *answerCache
}

func newUDPLoop(pc net.PacketConn, r Replier) (*udpLoop, error) {
	l := &udpLoop{replier: r, cache: newAnswerCache()}
	local, _ := pc.LocalAddr().(*net.UDPAddr)
	l.wildcard = local == nil || local.IP.IsUnspecified()
	l.v6 = local == nil || local.IP.To4() == nil
	oobSize := 0
	if l.v6 {
		c := ipv6.NewPacketConn(pc)
		if l.wildcard {
			if err := c.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
				return nil, err
			}
			oobSize = len(ipv6.NewControlMessage(ipv6.FlagDst | ipv6.FlagInterface))
		}
		l.conn = c
	} else {
		c := ipv4.NewPacketConn(pc)
		if l.wildcard {
			if err := c.SetControlMessage(ipv4.FlagDst, true); err != nil {
				return nil, err
			}
			oobSize = len(ipv4.NewControlMessage(ipv4.FlagDst))
		}
		l.conn = c
	}
	l.in = make([]ipv4.Message, batchSize)
	l.out = make([]ipv4.Message, batchSize)
	l.bufs = make([][]byte, batchSize)
	for i := range l.in {
		l.in[i].Buffers = [][]byte{make([]byte, maxQuerySize)}
		if oobSize > 0 {
			l.in[i].OOB = make([]byte, oobSize)
		}
		l.out[i].Buffers = make([][]byte, 1)
		l.bufs[i] = make([]byte, replyBufSize)
	}
	return l, nil
}

// serve answers until the socket is closed.
func (l *udpLoop) serve() error {
	for {
		n, err := l.conn.ReadBatch(l.in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue // a datagram's error (e.g. ICMP reported late) is not the socket's
		}
		// Read before any reply of the batch is made: see Generation.
		l.cache.sync(l.replier.Generation(), l.replier.Changed)
		m := 0
		for i := range n {
			if l.answer(&l.in[i], &l.out[m], l.bufs[m]) {
				m++
			}
		}
		if err := l.write(l.out[:m]); errors.Is(err, net.ErrClosed) {
			return nil
		}
	}
}

// write sends every message, skipping one the kernel refuses (sendmmsg
// reports an error only for the first message of a call).
func (l *udpLoop) write(ms []ipv4.Message) error {
	for len(ms) > 0 {
		n, err := l.conn.WriteBatch(ms, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			n = 1 // that client is unreachable; the others still get theirs
		}
		ms = ms[n:]
	}
	return nil
}

// answer fills out with the reply to the query in in, in buf when it fits;
// false when there is nothing to send.
func (l *udpLoop) answer(in, out *ipv4.Message, buf []byte) bool {
	p := in.Buffers[0][:in.N]
	if len(p) < 12 { // not even a header: any reply could amplify
		return false
	}
	wire := l.cache.get(p, buf, l.replier.Shuffle)
	if wire == nil {
		var ok bool
		if wire, ok = l.reply(p, buf); !ok {
			return false
		}
	}
	out.Buffers[0] = wire
	out.Addr = in.Addr
	out.OOB = nil
	if l.wildcard {
		out.OOB = l.source(in.OOB[:in.NN])
	}
	return true
}

// reply answers the query p without the cache, and keeps the answer there.
func (l *udpLoop) reply(p, buf []byte) ([]byte, bool) {
	r := &l.req
	if err := r.Unpack(p); err != nil {
		if r.Response {
			return nil, false
		}
		wire, err := formErr(r).PackBuffer(buf)
		return wire, err == nil
	}
	m := l.replier.Reply(r, true)
	if m == nil {
		return nil, false
	}
	wire, err := m.PackBuffer(buf)
	if err != nil {
		return nil, false
	}
	l.cache.put(p, wire, m)
	return wire, true
}

// formErr is the answer to a query that does not parse: its header and
// whatever questions parsed, FORMERR, the other sections left out.
func formErr(r *dns.Msg) *dns.Msg {
	r.SetRcodeFormatError(r)
	r.Zero = false
	r.Answer, r.Ns, r.Extra = nil, nil, nil
	return r
}

// source is the control message that makes an answer leave from the
// address oob says its query was sent to; nil when oob does not say.
func (l *udpLoop) source(oob []byte) []byte {
	var dst net.IP
	ifIndex := 0
	if l.v6 {
		var cm ipv6.ControlMessage
		if cm.Parse(oob) != nil {
			return nil
		}
		dst, ifIndex = cm.Dst, cm.IfIndex
	} else {
		var cm ipv4.ControlMessage
		if cm.Parse(oob) != nil {
			return nil
		}
		dst = cm.Dst
	}
	switch {
	case dst == nil:
		return nil
	case dst.To4() != nil:
		// Also on an IPv6 socket: an IPv4 query to a dual-stack socket
		// has a v4-mapped destination, and Linux takes IP_PKTINFO there.
		return (&ipv4.ControlMessage{Src: dst}).Marshal()
	case dst.IsLinkLocalUnicast():
		// A link-local source means something only on the link the
		// query came in on.
		return (&ipv6.ControlMessage{Src: dst, IfIndex: ifIndex}).Marshal()
	default:
		return (&ipv6.ControlMessage{Src: dst}).Marshal()
	}
}
