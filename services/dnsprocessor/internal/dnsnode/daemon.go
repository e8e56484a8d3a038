package dnsnode

import (
	"context"
	"errors"
	"slices"

	"github.com/hivemind/hivemind/pkg/cluster"
	"github.com/hivemind/hivemind/pkg/daemon"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/pkg/grpcclient"
)

// Role is the role name dns processors perform and find each other by.
const Role = "dns"

// Start builds the dns role on env: it joins the cluster (bootstrapping
// from the control plane), serves the DNSProcessor API and DNS, and marks
// the gRPC health SERVING once bootstrapped. It returns the stop function.
func Start(ctx context.Context, env *daemon.Env, f *Flags) (func(context.Context) error, error) {
	dnsCfg, err := f.DNSConfig()
	if err != nil {
		return nil, err
	}
	member, err := env.NewClusterNode(Role, daemon.ClusterOptions{NeedsBootstrap: []string{cluster.RoleControlPlane}})
	if err != nil {
		return nil, err
	}
	n, err := New(Config{
		DNSAddr:   f.DNSAddr,
		DNS:       dnsCfg,
		HostsFile: f.HostsFile,
		ControlPlane: func() ControlPlane {
			if cp := member.ControlPlane(); cp != nil {
				return cp
			}
			return nil // not a typed nil: no control plane before joining
		},
		Peers: func() []Peer { return peersOf(member.Agent().Members(), env.Common.NodeName) },
		DialPeer: func(addr string) (hivemindv1.DNSProcessorClient, func() error, error) {
			conn, err := grpcclient.Dial(addr, env.Client)
			if err != nil {
				return nil, nil, err
			}
			return hivemindv1.NewDNSProcessorClient(conn), conn.Close, nil
		},
		// Readiness is the bootstrap alone, not the cluster's: with the
		// control plane gone this processor still answers DNS, and a
		// health check that failed then would take the last answers away.
		OnReady: func() { env.Server.SetServing(true) },
		Logger:  env.Logger,
	})
	if err != nil {
		member.Stop(ctx)
		return nil, err
	}
	for method, r := range Rules {
		env.Auth.Policy().Set(method, r)
	}
	n.Register(env.Server.GRPC())
	if err := n.Start(ctx); err != nil {
		member.Stop(ctx)
		return nil, err
	}
	member.Start(ctx)
	return func(ctx context.Context) error {
		return errors.Join(member.Stop(ctx), n.Stop(ctx))
	}, nil
}

// peersOf lists the live dns processors of a gossip view, self excluded.
func peersOf(view map[string]gossip.Member, self string) []Peer {
	var out []Peer
	for name, m := range view {
		if name != self && m.State == gossip.StateAlive && m.Meta.GRPCAddr != "" && slices.Contains(m.Meta.Roles, Role) {
			out = append(out, Peer{Name: name, Addr: m.Meta.GRPCAddr})
		}
	}
	slices.SortFunc(out, func(a, b Peer) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}
