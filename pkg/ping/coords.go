package ping

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/serf/coordinate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// CoordinateConfig is serf's Vivaldi configuration.
type CoordinateConfig = coordinate.Config

// Coordinates keeps this node's Vivaldi coordinate and the last coordinate
// each peer sent. It is a gossip.PingHook: every probe ack carries the
// answering node's coordinate (AckPayload), and every answered probe moves
// ours by the measured round trip (PingComplete), as in Serf and Consul.
type Coordinates struct {
	client *coordinate.Client

	mu    sync.Mutex
	peers map[string]*coordinate.Coordinate
}

// NewCoordinates starts at the origin; cfg nil means serf's defaults.
func NewCoordinates(cfg *CoordinateConfig) (*Coordinates, error) {
	if cfg == nil {
		cfg = coordinate.DefaultConfig()
	}
	c, err := coordinate.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("ping: coordinates: %w", err)
	}
	return &Coordinates{client: c, peers: map[string]*coordinate.Coordinate{}}, nil
}

// AckPayload implements gossip.PingHook: our coordinate, as a
// hivemind.v1.Coordinate.
func (c *Coordinates) AckPayload() []byte {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(toProto(c.client.GetCoordinate()))
	return b
}

// PingComplete implements gossip.PingHook. A payload that is not a valid,
// compatible coordinate (an older node, a bad peer) is ignored.
func (c *Coordinates) PingComplete(member string, rtt time.Duration, payload []byte) {
	var p hivemindv1.Coordinate
	if len(payload) == 0 || proto.Unmarshal(payload, &p) != nil {
		return
	}
	other := fromProto(&p)
	if !other.IsValid() {
		return
	}
	if _, err := c.client.Update(member, other, rtt); err != nil {
		return
	}
	c.mu.Lock()
	c.peers[member] = other
	c.mu.Unlock()
}

// Own is this node's coordinate.
func (c *Coordinates) Own() *coordinate.Coordinate { return c.client.GetCoordinate() }

// Peer is the last coordinate member sent, if any.
func (c *Coordinates) Peer(member string) (*coordinate.Coordinate, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.peers[member]
	return p, ok
}

func toProto(c *coordinate.Coordinate) *hivemindv1.Coordinate {
	return &hivemindv1.Coordinate{Vec: c.Vec, Error: c.Error, Adjustment: c.Adjustment, Height: c.Height}
}

func fromProto(p *hivemindv1.Coordinate) *coordinate.Coordinate {
	return &coordinate.Coordinate{Vec: p.GetVec(), Error: p.GetError(), Adjustment: p.GetAdjustment(), Height: p.GetHeight()}
}

// EstimateRTT implements hivemindv1.NodeServer. b defaults to this node.
// A coordinate this node has not received from a probe is asked of its
// owner (EstimateRTT of the node with itself).
func (s *Service) EstimateRTT(ctx context.Context, req *hivemindv1.EstimateRTTRequest) (*hivemindv1.EstimateRTTResponse, error) {
	if req.GetA() == "" {
		return nil, invalid("a: required")
	}
	b := req.GetB()
	if b == "" {
		b = s.cfg.Name
	}
	ca, err := s.coordinateOf(ctx, "a", req.GetA())
	if err != nil {
		return nil, err
	}
	cb, err := s.coordinateOf(ctx, "b", b)
	if err != nil {
		return nil, err
	}
	if !ca.IsCompatibleWith(cb) {
		return nil, status.Errorf(codes.FailedPrecondition, "b: the coordinates of %s and %s have different dimensions", req.GetA(), b)
	}
	return &hivemindv1.EstimateRTTResponse{Rtt: durationpb.New(ca.DistanceTo(cb)), A: toProto(ca), B: toProto(cb)}, nil
}

func (s *Service) coordinateOf(ctx context.Context, field, name string) (*coordinate.Coordinate, error) {
	if name == s.cfg.Name {
		return s.coords.Own(), nil
	}
	if c, ok := s.coords.Peer(name); ok {
		return c, nil
	}
	v, err := s.view()
	if err != nil {
		return nil, err
	}
	m, ok := v.Members()[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s: no member named %q", field, name)
	}
	if m.Meta.GRPCAddr == "" {
		return nil, status.Errorf(codes.Unavailable, "%s: no coordinate of %s yet", field, name)
	}
	conn, err := s.conn(m.Meta.GRPCAddr)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%s: no coordinate of %s yet: %v", field, name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	resp, err := hivemindv1.NewNodeClient(conn).EstimateRTT(cctx, &hivemindv1.EstimateRTTRequest{A: name, B: name})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%s: no coordinate of %s yet, and asking it failed: %s", field, name, errText(err))
	}
	c := fromProto(resp.GetA())
	if !c.IsValid() || len(c.Vec) == 0 {
		return nil, status.Errorf(codes.Unavailable, "%s: %s sent no valid coordinate", field, name)
	}
	return c, nil
}
