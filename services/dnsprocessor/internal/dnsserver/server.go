package dnsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"

	"github.com/miekg/dns"
)

// Replier answers queries for a Server; Handler is one.
type Replier interface {
	// Reply is the reply to r, sized for UDP when udp is set; nil when r
	// must not be answered.
	Reply(r *dns.Msg, udp bool) *dns.Msg
	// Generation moves on whenever Reply may answer a query differently;
	// until then the server answers a query asked the same way again from
	// its cache, with its answer records reordered by Shuffle.
	Generation() uint64
	// Changed tells what moved between generations since and until: the
	// names (canonical) whose answers may differ, and whether every answer
	// carrying the zone's SOA may. The cache drops only those. False when
	// that is not known: the cache then starts over.
	Changed(since, until uint64) (names []string, soa, ok bool)
	Shuffle(n int, swap func(i, j int))
}

// Server serves a Replier on UDP and TCP at one address: UDP from loops of
// its own that read and write packets in batches, TCP with dns.Server.
type Server struct {
	addr    string
	replier Replier

	udp  []net.PacketConn // sockets sharing the port, one loop each
	tcp  *dns.Server
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error // from the serving goroutines
}

// NewServer returns a server for r on addr ("host:port"; port 0 picks one
// free port for both UDP and TCP).
func NewServer(addr string, r Replier) *Server {
	return &Server{addr: addr, replier: r}
}

// Start binds the sockets and serves them until Shutdown. It returns once
// all are accepting queries.
func (s *Server) Start() error {
	pcs, ln, err := listen(s.addr, udpSockets())
	if err != nil {
		return err
	}
	loops := make([]*udpLoop, len(pcs))
	for i, pc := range pcs {
		if loops[i], err = newUDPLoop(pc, s.replier); err != nil {
			ln.Close()
			for _, pc := range pcs {
				pc.Close()
			}
			return fmt.Errorf("dnsserver: udp %s: %w", s.addr, err)
		}
	}
	s.udp = pcs
	for _, l := range loops {
		s.wg.Go(func() { s.report(l.serve()) })
	}

	accept := func(dh dns.Header) dns.MsgAcceptAction {
		if dh.Bits&(1<<15) != 0 { // QR: a response, never answered
			return dns.MsgIgnore
		}
		return dns.MsgAccept // the replier judges everything else
	}
	started := make(chan struct{}, 1)
	s.tcp = &dns.Server{Listener: ln, Handler: tcpHandler{s.replier}, MsgAcceptFunc: accept,
		NotifyStartedFunc: func() { started <- struct{}{} }}
	s.wg.Go(func() {
		if err := s.tcp.ActivateAndServe(); err != nil {
			s.report(err)
			started <- struct{}{}
		}
	})
	<-started
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		return fmt.Errorf("dnsserver: serve %s: %w", s.addr, errors.Join(s.errs...))
	}
	return nil
}

func (s *Server) report(err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

// tcpHandler serves a Replier as a dns.Handler, for TCP.
type tcpHandler struct{ r Replier }

func (h tcpHandler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	if m := h.r.Reply(r, false); m != nil {
		_ = w.WriteMsg(m) // nothing to do about a client that went away
	}
}

// udpSockets is how many UDP sockets share the port. Go reads each socket
// from one goroutine and serialises its writes, so one socket holds the
// server to about one core whatever GOMAXPROCS is; with one per P the
// kernel spreads clients over them (SO_REUSEPORT hashes the 4-tuple).
func udpSockets() int { return runtime.GOMAXPROCS(0) }

// listen binds TCP and n UDP sockets on the same port (fewer UDP sockets
// where the system cannot share a port). With port 0 it lets TCP pick and
// takes the same port for UDP, trying again if another process holds it.
// TCP is bound without SO_REUSEPORT, so a second server started on a port
// in use still fails instead of silently sharing its queries.
func listen(addr string, n int) ([]net.PacketConn, net.Listener, error) {
	var errs []error
	for range 10 {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("dnsserver: listen tcp %s: %w", addr, err)
		}
		pcs, err := listenUDP(ln.Addr().String(), n)
		if err == nil {
			return pcs, ln, nil
		}
		ln.Close()
		errs = append(errs, err)
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break
		}
	}
	return nil, nil, fmt.Errorf("dnsserver: listen udp %s: %w", addr, errors.Join(errs...))
}

// Addr is the address the sockets are bound to.
func (s *Server) Addr() string { return s.tcp.Listener.Addr().String() }

// Shutdown stops the listeners and waits, until ctx ends, for queries in
// flight.
func (s *Server) Shutdown(ctx context.Context) error {
	errs := []error{s.tcp.ShutdownContext(ctx)}
	for _, pc := range s.udp {
		errs = append(errs, pc.Close())
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	s.mu.Lock()
	errs = append(errs, s.errs...)
	s.mu.Unlock()
	return errors.Join(errs...)
}
