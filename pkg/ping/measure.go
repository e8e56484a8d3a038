package ping

import (
	"context"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/retry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
)

// measure pings the target count times over gRPC, one after the other,
// within ctx, and adds the RTT of gossip's last probe of it. A first,
// uncounted ping sets up the connection (TLS, node authentication), which
// a round trip should not include.
func (s *Service) measure(ctx context.Context, tgt gossip.Member, count uint32) *hivemindv1.PingRequestResponse {
	r := &hivemindv1.PingRequestResponse{Node: s.cfg.Name, Target: tgt.Name, Sent: count}
	if !tgt.LastContact.IsZero() && tgt.Name != s.cfg.Name {
		r.SwimRtt = durationpb.New(tgt.RTT)
	}
	conn, err := s.conn(tgt.Meta.GRPCAddr)
	if err != nil {
		r.Loss, r.Error = 1, errText(err)
		return r
	}
	client := hivemindv1.NewNodeClient(conn)
	per := time.Second
	if dl, ok := ctx.Deadline(); ok {
		per = time.Until(dl) / time.Duration(count+1)
	}
	ping := func() (time.Duration, error) {
		pctx, cancel := context.WithTimeout(ctx, per)
		defer cancel()
		start := time.Now()
		_, err := client.Ping(pctx, &hivemindv1.NodePingRequest{From: s.cfg.Name}, retry.Disable())
		return time.Since(start), err
	}
	_, _ = ping()
	var sum, lo, hi time.Duration
	var lastErr error
	for range count {
		if ctx.Err() != nil {
			break
		}
		rtt, err := ping()
		if err != nil {
			lastErr = err
			continue
		}
		r.Received++
		sum += rtt
		if r.Received == 1 || rtt < lo {
			lo = rtt
		}
		hi = max(hi, rtt)
	}
	r.Loss = float64(count-r.Received) / float64(count)
	if r.Received > 0 {
		r.RttMin, r.RttMax = durationpb.New(lo), durationpb.New(hi)
		r.RttAvg = durationpb.New(sum / time.Duration(r.Received))
	}
	if lastErr != nil {
		r.Error = errText(lastErr)
	} else if r.Received < count {
		r.Error = "ran out of time"
	}
	return r
}

// probeTarget calls a probe on the target once. For the time probe it adds
// the target's clock offset from this node's, taking the answer to have
// been made halfway through the round trip.
func (s *Service) probeTarget(ctx context.Context, tgt gossip.Member, probe string, args map[string]string) *hivemindv1.ProbeRequestResponse {
	r := &hivemindv1.ProbeRequestResponse{Node: s.cfg.Name, Target: tgt.Name}
	conn, err := s.conn(tgt.Meta.GRPCAddr)
	if err != nil {
		r.Error = errText(err)
		return r
	}
	client := hivemindv1.NewNodeClient(conn)
	// Set up the connection first so that the RTT is one round trip.
	_, _ = client.Ping(ctx, &hivemindv1.NodePingRequest{From: s.cfg.Name}, retry.Disable())
	start := s.cfg.Now()
	resp, err := client.Probe(ctx, &hivemindv1.NodeProbeRequest{Name: probe, Args: args}, retry.Disable())
	end := s.cfg.Now()
	if err != nil {
		r.Error = errText(err)
		return r
	}
	rtt := end.Sub(start)
	r.Rtt, r.Response = durationpb.New(rtt), resp
	if probe == ProbeTime {
		if fields := resp.GetData().GetFields(); fields != nil {
			if ts, err := time.Parse(time.RFC3339Nano, fields["time"].GetStringValue()); err == nil {
				offset := ts.Sub(start.Add(rtt / 2))
				fields["offset"] = structpb.NewStringValue(offset.String())
				fields["offset_seconds"] = structpb.NewNumberValue(offset.Seconds())
				fields["measured_by"] = structpb.NewStringValue(s.cfg.Name)
			}
		}
	}
	return r
}
