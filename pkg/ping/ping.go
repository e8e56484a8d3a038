// Package ping is the measuring half of hivemind.v1.Node, served by every
// role: Ping (the target side of a standard ping), PingRequest and
// ProbeRequest (ask the selected members to measure a target and stream
// their results), Probe (named probes: built-in version, load, disk and
// time, and exec probes a role declares), EstimateRTT (Vivaldi network
// coordinates carried by gossip probes), and the record of this node's
// links to its peers under /nodes/<node>/links/<peer>.
//
// A Service works alone (Ping, Probe) from New; the gossip hook
// (Coordinates) goes into the gossip configuration before the agent
// starts, and Attach gives the service the node's gossip view and the
// store its link records go to.
//
// How a member is asked to measure: the coordinator sends it the same
// PingRequest (or ProbeRequest) with a selector naming that member alone.
// A node that finds itself the only selected member measures the target
// itself and answers with one result instead of fanning out, so there is
// one RPC for operators and nodes alike and no fan-out loops.
package ping

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/hlc"
)

// Config configures a Service. Zero values take the documented defaults.
type Config struct {
	// Name of this node.
	Name string
	// Role is reported by the version probe.
	Role string
	// DataDir is the directory the disk probe reports on.
	DataDir string
	// Dial is how this node reaches others (TLS, node authentication).
	Dial grpcclient.Config
	// Exec are the exec probes: name → argv. Only callers with the admin
	// scope may run them. SetExec replaces them later.
	Exec map[string][]string
	// Links configures the link records.
	Links LinkConfig
	// Coordinates configures the Vivaldi client; nil means serf's defaults.
	Coordinates *CoordinateConfig
	Logger      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// View is the node's gossip view; *gossip.Agent is one.
type View interface {
	Members() map[string]gossip.Member
}

// Store takes link records; *cpclient.Client is one.
type Store interface {
	Put(ctx context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error)
	Range(ctx context.Context, req *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error)
}

// Cluster is what Attach gives the service once the node has membership.
type Cluster struct {
	View View
	// Store returns where link records go, or nil while there is none
	// (before the node has joined); records wait until there is.
	Store func() Store
	// Closer, when set, is closed with the service (a store the caller
	// made for it).
	Closer interface{ Close() error }
}

// Service implements Ping, PingRequest, Probe, ProbeRequest and
// EstimateRTT of hivemindv1.NodeServer; Info is served by package nodeinfo.
type Service struct {
	cfg    Config
	log    *slog.Logger
	coords *Coordinates
	clock  *hlc.Clock

	mu      sync.Mutex
	exec    map[string][]string
	cluster *Cluster
	conns   map[string]*grpc.ClientConn
	stop    context.CancelFunc
	done    chan struct{}
	closed  bool
}

// New returns a service answering Ping and Probe; PingRequest,
// ProbeRequest and EstimateRTT of other nodes need Attach.
func New(cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Links = cfg.Links.withDefaults()
	coords, err := NewCoordinates(cfg.Coordinates)
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg: cfg, log: cfg.Logger, coords: coords, clock: hlc.New(cfg.Now),
		exec: maps.Clone(cfg.Exec), conns: map[string]*grpc.ClientConn{},
	}, nil
}

// Coordinates is the gossip hook that keeps this node's network
// coordinate: set it as gossip.Config.Ping before the agent starts.
func (s *Service) Coordinates() *Coordinates { return s.coords }

// SetExec replaces the exec probes (a role's configuration was reloaded).
func (s *Service) SetExec(probes map[string][]string) {
	s.mu.Lock()
	s.exec = maps.Clone(probes)
	s.mu.Unlock()
}

// Attach gives the service the node's membership and starts recording
// links. It is called once.
func (s *Service) Attach(c Cluster) {
	ctx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.cluster != nil {
		cancel()
		return
	}
	s.cluster = &c
	s.stop, s.done = cancel, make(chan struct{})
	go s.recordLinks(ctx, newLinkRecorder(s, c))
}

// Close stops recording links and closes the connections to peers.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	stop, done, c := s.stop, s.done, s.cluster
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	s.mu.Lock()
	var errs []error
	for _, conn := range s.conns {
		errs = append(errs, conn.Close())
	}
	s.conns = map[string]*grpc.ClientConn{}
	s.mu.Unlock()
	if c != nil && c.Closer != nil {
		errs = append(errs, c.Closer.Close())
	}
	return errors.Join(errs...)
}

// view returns the gossip view, or UNAVAILABLE before Attach.
func (s *Service) view() (View, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil {
		return nil, status.Error(codes.Unavailable, "this node has no membership yet")
	}
	return s.cluster.View, nil
}

// conn returns a (cached) connection to a peer's gRPC address.
func (s *Service) conn(addr string) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c, nil
	}
	if s.closed {
		return nil, errors.New("ping: service closed")
	}
	c, err := grpcclient.Dial(addr, s.cfg.Dial)
	if err != nil {
		return nil, err
	}
	s.conns[addr] = c
	return c, nil
}

// Ping implements hivemindv1.NodeServer: it answers at once.
func (s *Service) Ping(context.Context, *hivemindv1.NodePingRequest) (*hivemindv1.NodePingResponse, error) {
	return &hivemindv1.NodePingResponse{NodeName: s.cfg.Name, Time: timestamppb.New(s.cfg.Now())}, nil
}
