package daemon

import (
	"context"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hivemind/hivemind/pkg/cluster"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/pkg/ping"
	"github.com/hivemind/hivemind/pkg/ticket"
)

// ClusterFlags are the membership flags every role has.
type ClusterFlags struct {
	// GossipAddr is where gossip listens, host:port.
	GossipAddr string
	// GossipAdvertise is the gossip address others dial (default: the
	// bound one).
	GossipAdvertise string
	// GossipPreset names the timing preset: lan, fast or local.
	GossipPreset string
	// Seeds are gRPC addresses of members to join through.
	Seeds string
	// Requires are roles that must be present for this node to be ready.
	Requires string
}

func (c *ClusterFlags) register(fs *flag.FlagSet, r Role) {
	def := r.DefaultGossipAddr
	if def == "" {
		def = "0.0.0.0:7946"
	}
	fs.StringVar(&c.GossipAddr, "gossip-addr", def, "address gossip (SWIM, UDP and TCP) listens on")
	fs.StringVar(&c.GossipAdvertise, "gossip-advertise-addr", "", "gossip address other nodes dial (default: --gossip-addr)")
	fs.StringVar(&c.GossipPreset, "gossip-preset", "fast", "gossip timings: fast (failure detected in about 2 s), lan (memberlist's LAN defaults) or local")
	fs.StringVar(&c.Seeds, "seeds", "", "gRPC addresses (host:port,…) of cluster members to join through; any role can be a seed")
	fs.StringVar(&c.Requires, "requires", strings.Join(r.DefaultRequires, ","), "roles that must be present in the cluster for this node to be ready")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// gossipConfig builds the gossip configuration from the flags.
func (c ClusterFlags) gossipConfig(env *Env) (gossip.Config, error) {
	var g gossip.Config
	switch c.GossipPreset {
	case "fast":
		g = gossip.FastLANConfig(env.Common.NodeName)
	case "lan":
		g = gossip.DefaultLANConfig(env.Common.NodeName)
	case "local":
		g = gossip.DefaultLocalConfig(env.Common.NodeName)
	default:
		return g, fmt.Errorf("--gossip-preset: %q is not fast, lan or local", c.GossipPreset)
	}
	host, port, err := splitHostPort("--gossip-addr", c.GossipAddr)
	if err != nil {
		return g, err
	}
	g.BindAddr, g.BindPort = host, port
	if c.GossipAdvertise != "" {
		if g.AdvertiseAddr, g.AdvertisePort, err = splitHostPort("--gossip-advertise-addr", c.GossipAdvertise); err != nil {
			return g, err
		}
	}
	g.Secret = env.Secret
	g.DataDir = filepath.Join(env.Common.DataDir, "gossip")
	g.Logger = env.Logger
	g.Registerer = env.Registry
	return g, nil
}

func splitHostPort(flagName, addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %q is not host:port", flagName, addr)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s: %q has no valid port", flagName, addr)
	}
	return h, port, nil
}

// ClusterOptions says how a role takes part in membership.
type ClusterOptions struct {
	// Performs are the roles this node performs; default: the role's name.
	Performs []string
	// NeedsBootstrap are roles this node bootstraps its state from.
	NeedsBootstrap []string
	// Local is the control plane's own registry (control plane only).
	Local cluster.Registry
	// Epoch is the registry's epoch (control plane only).
	Epoch func() uint64
	// Issuers gives the keys of ticket issuers from the local registry
	// (control plane only; elsewhere the node's copy of the registry).
	Issuers ticket.KeyOf
	// OnReady sees readiness changes (joined, required roles present).
	OnReady func(ready bool, reason string)
	// Tune adjusts the node configuration before it is built (tests).
	Tune func(*cluster.NodeConfig)
}

// NewClusterNode builds this process's membership from the flags and
// serves its Membership service; the role starts it (Start) once its own
// services are registered, and stops it (Stop) first on shutdown.
func (env *Env) NewClusterNode(role string, opts ClusterOptions) (*cluster.Node, error) {
	g, err := env.Common.Cluster.gossipConfig(env)
	if err != nil {
		return nil, err
	}
	performs := opts.Performs
	if len(performs) == 0 {
		performs = []string{role}
	}
	cfg := cluster.NodeConfig{
		Name: env.Common.NodeName,
		Roles: &hivemindv1.Roles{
			Performs: performs, Requires: splitList(env.Common.Cluster.Requires), NeedsBootstrap: opts.NeedsBootstrap,
		},
		GRPCAddress: env.Common.AdvertiseAddr,
		Key:         env.NodeKey,
		Seeds:       splitList(env.Common.Cluster.Seeds),
		Local:       opts.Local,
		Epoch:       opts.Epoch,
		Issuers:     opts.Issuers,
		Dial:        env.Client,
		Gossip:      g,
		OnReady:     opts.OnReady,
		Logger:      env.Logger,
	}
	if env.Ping != nil {
		// Probe acks carry network coordinates; the hook must be in place
		// before gossip starts.
		cfg.Gossip.Ping = env.Ping.Coordinates()
	}
	if env.certs != nil {
		cfg.OnJoin = env.certs.onJoin
	}
	if opts.Tune != nil {
		opts.Tune(&cfg)
	}
	n, err := cluster.NewNode(cfg)
	if err != nil {
		return nil, err
	}
	if env.certs != nil {
		env.certs.setNode(n)
	}
	hivemindv1.RegisterMembershipServer(env.Server.GRPC(), n.Service())
	if opts.Local == nil && env.Members != nil {
		// The control plane plugs in its own replica instead.
		env.Members.Set(n.Members())
	}
	if env.Ping != nil {
		c, err := env.pingCluster(n, opts.Local != nil)
		if err != nil {
			_ = n.Stop(context.Background())
			return nil, err
		}
		env.Ping.Attach(c)
	}
	return n, nil
}

// pingCluster is what the ping service records links through: the node's
// control-plane client once it has joined; on the control plane, which has
// none, a client of its own gRPC endpoint, so that link records go through
// the same API, authentication and ownership checks as every other node's.
func (env *Env) pingCluster(n *cluster.Node, onControlPlane bool) (ping.Cluster, error) {
	if !onControlPlane {
		return ping.Cluster{View: n.Agent(), Store: func() ping.Store {
			if cp := n.ControlPlane(); cp != nil {
				return cp
			}
			return nil
		}}, nil
	}
	own, err := cpclient.New(cpclient.Config{Endpoints: []string{env.Common.AdvertiseAddr}, Dial: env.Client})
	if err != nil {
		return ping.Cluster{}, err
	}
	return ping.Cluster{View: n.Agent(), Closer: own, Store: func() ping.Store {
		select {
		case <-n.Joined():
			return own
		default:
			return nil
		}
	}}, nil
}
