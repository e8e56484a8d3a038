package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// onAny opens a stream on the first endpoint (or --node) that takes it.
func onAny[T any](ctx context.Context, c *clients, fn func(*grpc.ClientConn) (T, error)) (T, error) {
	var zero T
	addrs := c.g.endpoints
	if c.g.node != "" {
		ts, err := c.roleTargetsAny(ctx)
		if err != nil {
			return zero, err
		}
		addrs = ts
	}
	var last error
	for _, a := range addrs {
		conn, err := c.conn(a)
		if err != nil {
			return zero, err
		}
		resp, err := fn(conn)
		if err == nil || status.Code(err) != codes.Unavailable {
			return resp, err
		}
		last = err
	}
	return zero, last
}

// roleTargetsAny is --node's address, whatever its role.
func (c *clients) roleTargetsAny(ctx context.Context) ([]string, error) {
	ms, err := c.listMembers(ctx)
	if err != nil {
		return nil, err
	}
	for _, v := range ms.GetMembers() {
		if v.GetMember().GetName() == c.g.node && v.GetMember().GetGrpcAddress() != "" {
			return []string{v.GetMember().GetGrpcAddress()}, nil
		}
	}
	return nil, usagef("--node %s: no such member", c.g.node)
}

func selector(roles, nodes []string) *hivemindv1.Selector {
	if len(roles) == 0 && len(nodes) == 0 {
		return nil
	}
	return &hivemindv1.Selector{Roles: roles, Nodes: nodes}
}

type pingOut struct {
	Node     string  `json:"node"`
	Target   string  `json:"target"`
	Sent     uint32  `json:"sent"`
	Received uint32  `json:"received"`
	Loss     float64 `json:"loss"`
	RTTMin   string  `json:"rtt_min,omitempty"`
	RTTAvg   string  `json:"rtt_avg,omitempty"`
	RTTMax   string  `json:"rtt_max,omitempty"`
	SwimRTT  string  `json:"swim_rtt,omitempty"`
	Error    string  `json:"error,omitempty"`
	TimedOut bool    `json:"timed_out,omitempty"`
}

func pingCmd(g *globals) *cobra.Command {
	var count uint32
	var perNode time.Duration
	var roles, nodes []string
	cmd := &cobra.Command{
		Use:   "ping TARGET",
		Short: "Have the cluster's nodes ping a node, and stream each one's result",
		Long: `Ask every alive member (or those of --role / --from) to ping the node
TARGET — gRPC round trips, and the RTT of gossip's last probe — and print
each node's result as it arrives. The request goes to the first endpoint
(or --node), which fans it out.`,
		Example: `  hivectl ping cp1
  hivectl ping host1 --role controlplane --count 10 -o json`,
		Args: exactArgs("TARGET"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			req := &hivemindv1.PingRequestRequest{Target: args[0], Count: count, Selector: selector(roles, nodes)}
			if perNode > 0 {
				req.Timeout = durationpb.New(perNode)
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			stream, err := onAny(ctx, cl, func(conn *grpc.ClientConn) (grpc.ServerStreamingClient[hivemindv1.PingRequestResponse], error) {
				s, err := hivemindv1.NewNodeClient(conn).PingRequest(ctx, req)
				if err != nil {
					return nil, err
				}
				// The first message (or the refusal) comes with the first
				// receive; UNAVAILABLE there moves on to the next endpoint.
				return s, nil
			})
			if err != nil {
				return err
			}
			// Tables come whole, aligned, once every node answered (within
			// the per-node timeout); JSON and YAML stream as results arrive.
			g.streamHeader("NODE", "TARGET", "SENT", "RECEIVED", "LOSS", "RTT_MIN", "RTT_AVG", "RTT_MAX", "SWIM_RTT", "ERROR")
			for {
				r, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				o := &pingOut{Node: r.GetNode(), Target: r.GetTarget(), Sent: r.GetSent(), Received: r.GetReceived(), Loss: r.GetLoss(),
					RTTMin: dur(r.GetRttMin()), RTTAvg: dur(r.GetRttAvg()), RTTMax: dur(r.GetRttMax()), SwimRTT: dur(r.GetSwimRtt()),
					Error: r.GetError(), TimedOut: r.GetTimedOut()}
				errText := o.Error
				if o.TimedOut {
					errText = "timed out"
				}
				if err := g.printItem(o, func(w io.Writer) {
					row(w, o.Node, o.Target, o.Sent, o.Received, fmt.Sprintf("%.0f%%", 100*o.Loss), orDash(o.RTTMin), orDash(o.RTTAvg), orDash(o.RTTMax), orDash(o.SwimRTT), orDash(errText))
				}); err != nil {
					return err
				}
			}
		}),
	}
	cmd.Flags().Uint32Var(&count, "count", 3, "pings per node (at most 100)")
	cmd.Flags().DurationVar(&perNode, "per-node-timeout", 0, "how long each node may take (default 2s, at most 30s)")
	cmd.Flags().StringSliceVar(&roles, "role", nil, "only nodes of these roles")
	cmd.Flags().StringSliceVar(&nodes, "from", nil, "only these nodes")
	return cmd
}

type probeOut struct {
	Node     string         `json:"node"`
	Target   string         `json:"target"`
	Probe    string         `json:"probe"`
	RTT      string         `json:"rtt,omitempty"`
	Data     map[string]any `json:"data,omitempty"`
	Error    string         `json:"error,omitempty"`
	TimedOut bool           `json:"timed_out,omitempty"`
}

func probeCmd(g *globals) *cobra.Command {
	var probeArgs []string
	var perNode time.Duration
	var roles, nodes []string
	cmd := &cobra.Command{
		Use:   "probe TARGET NAME",
		Short: "Have the cluster's nodes call a named probe on a node, and stream the results",
		Long: `Ask every alive member (or those of --role / --from) to call probe NAME
(version, load, disk, time, or an exec probe of the host's configuration)
on node TARGET, and print each result as it arrives.`,
		Example: `  hivectl probe host1 load
  hivectl probe host1 version --from cp1 -o json`,
		Args: exactArgs("TARGET", "NAME"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			pa, err := parsePairs("--arg", probeArgs)
			if err != nil {
				return err
			}
			req := &hivemindv1.ProbeRequestRequest{Target: args[0], Probe: args[1], Args: pa, Selector: selector(roles, nodes)}
			if perNode > 0 {
				req.Timeout = durationpb.New(perNode)
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			stream, err := onAny(ctx, cl, func(conn *grpc.ClientConn) (grpc.ServerStreamingClient[hivemindv1.ProbeRequestResponse], error) {
				return hivemindv1.NewNodeClient(conn).ProbeRequest(ctx, req)
			})
			if err != nil {
				return err
			}
			// Tables come whole, aligned, once every node answered (within
			// the per-node timeout); JSON and YAML stream as results arrive.
			g.streamHeader("NODE", "TARGET", "PROBE", "RTT", "DATA", "ERROR")
			for {
				r, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				o := &probeOut{Node: r.GetNode(), Target: r.GetTarget(), Probe: args[1], RTT: dur(r.GetRtt()), Error: r.GetError(), TimedOut: r.GetTimedOut()}
				if d := r.GetResponse().GetData(); d != nil {
					o.Data = d.AsMap()
				}
				data := "-"
				if o.Data != nil {
					b, _ := json.Marshal(o.Data)
					data = string(b)
				}
				errText := o.Error
				if o.TimedOut {
					errText = "timed out"
				}
				if err := g.printItem(o, func(w io.Writer) {
					row(w, o.Node, o.Target, o.Probe, orDash(o.RTT), data, orDash(errText))
				}); err != nil {
					return err
				}
			}
		}),
	}
	cmd.Flags().StringSliceVar(&probeArgs, "arg", nil, "key=value argument of the probe (repeat or comma-separate)")
	cmd.Flags().DurationVar(&perNode, "per-node-timeout", 0, "how long each node may take")
	cmd.Flags().StringSliceVar(&roles, "role", nil, "only nodes of these roles")
	cmd.Flags().StringSliceVar(&nodes, "from", nil, "only these nodes")
	return cmd
}
