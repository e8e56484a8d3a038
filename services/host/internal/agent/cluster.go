package agent

import (
	"context"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cluster"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/hostpublish"
)

// RoleDNS is the role of the dns processors the fast path streams to.
const RoleDNS = auth.RoleDNS

// ControlPlane is the node's control-plane client, nil until it joined.
// It is asked for on every use: the node replaces it when the control
// plane's members change.
func ControlPlane(n *cluster.Node) func() *cpclient.Client {
	return n.ControlPlane
}

// PublishStore adapts ControlPlane to the publisher (a nil client is no
// store, not a non-nil interface holding nil).
func PublishStore(cp func() *cpclient.Client) func() hostpublish.Store {
	return func() hostpublish.Store {
		if c := cp(); c != nil {
			return c
		}
		return nil
	}
}

// DNSTargets lists the gRPC addresses of the live dns processors in the
// node's gossip view.
func DNSTargets(n *cluster.Node) func() []string {
	return func() []string {
		self := n.Agent().LocalNode().Name
		var out []string
		for name, m := range n.Agent().Members() {
			if name != self && m.State == gossip.StateAlive && m.Meta.GRPCAddr != "" && slices.Contains(m.Meta.Roles, RoleDNS) {
				out = append(out, m.Meta.GRPCAddr)
			}
		}
		slices.Sort(out)
		return out
	}
}

// PushDialer opens PushHosts streams, keeping one connection per dns
// processor.
type PushDialer struct {
	Dial grpcclient.Config

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// Open implements hostpublish.OpenSink.
func (d *PushDialer) Open(ctx context.Context, addr string) (hostpublish.Sink, error) {
	d.mu.Lock()
	conn := d.conns[addr]
	if conn == nil {
		var err error
		if conn, err = grpcclient.Dial(addr, d.Dial); err != nil {
			d.mu.Unlock()
			return nil, err
		}
		if d.conns == nil {
			d.conns = map[string]*grpc.ClientConn{}
		}
		d.conns[addr] = conn
	}
	d.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	stream, err := hivemindv1.NewDNSProcessorClient(conn).PushHosts(sctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &pushSink{stream: stream, cancel: cancel}, nil
}

// Close closes every connection.
func (d *PushDialer) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

type pushSink struct {
	stream hivemindv1.DNSProcessor_PushHostsClient
	cancel context.CancelFunc
}

func (s *pushSink) Send(r *hivemindv1.HostRecord) error {
	if err := s.stream.Send(&hivemindv1.PushHostsRequest{Host: r}); err != nil {
		// Send reports only that the stream ended; the status says why.
		if _, rerr := s.stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
		return err
	}
	return nil
}

// Close half-closes the stream and gives the processor a moment to answer
// before the stream is cut.
func (s *pushSink) Close() error {
	done := make(chan struct{})
	go func() {
		_, _ = s.stream.CloseAndRecv()
		close(done)
	}()
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	s.cancel()
	return nil
}

// ReloadOnSIGHUP reloads the configuration whenever the process gets
// SIGHUP, until ctx ends.
func (a *Agent) ReloadOnSIGHUP(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				_, changed, err := a.Reload()
				if err != nil {
					a.log.Error("SIGHUP: configuration not reloaded; keeping the running one", "err", err)
					continue
				}
				a.log.Info("SIGHUP: configuration reloaded", "changed", changed)
			}
		}
	}()
}
