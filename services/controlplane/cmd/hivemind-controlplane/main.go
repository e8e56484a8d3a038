// Command hivemind-controlplane runs one member of the raft-replicated
// control plane.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cluster"
	"github.com/hivemind/hivemind/pkg/daemon"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
	"github.com/hivemind/hivemind/services/controlplane/internal/api"
	"github.com/hivemind/hivemind/services/controlplane/internal/backup"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
	"github.com/hivemind/hivemind/services/controlplane/internal/members"
	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
	"github.com/hivemind/hivemind/services/controlplane/internal/replica"
	"github.com/hivemind/hivemind/services/controlplane/internal/watch"
)

type flags struct {
	cluster        string
	join           bool
	tick           time.Duration
	electionTicks  int
	snapshotEvery  uint64
	snapshotBytes  uint64
	maxRevisions   int64
	maxHistory     int64
	maxWatches     int
	maxPerCaller   int
	reconcileEvery time.Duration
	maxClockSkew   time.Duration
	backupDir      string
	backupEvery    time.Duration
	backupRetain   int
	memberGrace    time.Duration
}

func main() {
	if code, ok := subcommand(context.Background(), os.Args[1:], os.Stdout, os.Stderr); ok {
		os.Exit(code)
	}
	var f flags
	daemon.Main(daemon.Role{
		Name:               "controlplane",
		Command:            "hivemind-controlplane",
		Synopsis:           "Control plane: the raft-replicated event log, resource tree, intents and membership.\n" + subcommandsHelp,
		DefaultGRPCAddr:    "127.0.0.1:7000",
		DefaultMetricsAddr: "127.0.0.1:9100",
		DefaultGossipAddr:  "127.0.0.1:7946",
		Flags: func(fs *flag.FlagSet) {
			fs.StringVar(&f.cluster, "initial-cluster", "", "the control-plane members as name=host:port,… (this node included); used on first start")
			fs.BoolVar(&f.join, "join", false, "join a running cluster (after MemberAdd) instead of bootstrapping a new one")
			fs.DurationVar(&f.tick, "tick-interval", 100*time.Millisecond, "raft tick; heartbeats every tick")
			fs.IntVar(&f.electionTicks, "election-ticks", 10, "ticks without a leader before a follower campaigns")
			fs.Uint64Var(&f.snapshotEvery, "snapshot-every", 100000, "applied entries between raft snapshots")
			fs.Uint64Var(&f.snapshotBytes, "snapshot-every-bytes", 64<<20, "bytes of applied entries after which a raft snapshot is taken even before --snapshot-every entries; the log kept behind a snapshot is bounded by as much")
			fs.Int64Var(&f.maxRevisions, "max-revisions", 100000, "revisions of the event log kept before the oldest are dropped")
			fs.Int64Var(&f.maxHistory, "max-history-bytes", fsm.DefaultMaxHistoryBytes, "encoded bytes of events the event log keeps before the oldest revisions are dropped (the latest is always kept); set the same on every member")
			fs.IntVar(&f.maxWatches, "max-watches", 10000, "concurrent watches this node serves")
			fs.DurationVar(&f.maxClockSkew, "max-clock-skew", replica.DefaultMaxClockSkew, "how far ahead of the leader's clock a writer's hlc (Put, Delete) may be; a write stamped later is refused with INVALID_ARGUMENT")
			fs.IntVar(&f.maxPerCaller, "max-watches-per-caller", 1000, "concurrent watches one caller (node or operator token) may hold on this node; control-plane members and admin operators count only against --max-watches")
			fs.StringVar(&f.backupDir, "snapshot-dir", "", "directory where the leader writes a snapshot file every --snapshot-interval (see docs/operations.md); empty: none")
			fs.DurationVar(&f.backupEvery, "snapshot-interval", time.Hour, "time between scheduled snapshot files (with --snapshot-dir)")
			fs.IntVar(&f.backupRetain, "snapshot-retain", 24, "scheduled snapshot files kept; older ones are removed")
			fs.DurationVar(&f.reconcileEvery, "reconcile-interval", 5*time.Second, "how often the leader compares the member registry with gossip in full (gossip events also trigger it)")
			fs.DurationVar(&f.memberGrace, "member-grace", 30*time.Second, "how long a member that joined may stay unseen by gossip before the leader records it failed")
		},
		Start: func(ctx context.Context, env *daemon.Env) (func(context.Context) error, error) {
			return start(ctx, env, f)
		},
	})
}

// parseCluster reads name=host:port,… into members whose peer (raft) and
// gRPC addresses are the same port.
func parseCluster(s string) ([]*hivemindv1.Member, error) {
	var out []*hivemindv1.Member
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, addr, ok := strings.Cut(part, "=")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("--initial-cluster: %q is not name=host:port", part)
		}
		out = append(out, &hivemindv1.Member{Name: name, PeerAddress: addr, GrpcAddress: addr})
	}
	return out, nil
}

func start(ctx context.Context, env *daemon.Env, f flags) (func(context.Context) error, error) {
	if f.maxClockSkew <= 0 {
		return nil, fmt.Errorf("--max-clock-skew: %s; must be positive", f.maxClockSkew)
	}
	if f.memberGrace <= 0 {
		return nil, fmt.Errorf("--member-grace: %s; must be positive", f.memberGrace)
	}
	if f.maxRevisions < 1 {
		return nil, fmt.Errorf("--max-revisions: %d is less than 1", f.maxRevisions)
	}
	if f.maxWatches < 1 || f.maxPerCaller < 1 {
		return nil, fmt.Errorf("--max-watches (%d) and --max-watches-per-caller (%d) must be at least 1", f.maxWatches, f.maxPerCaller)
	}
	if f.snapshotBytes < 1<<20 {
		return nil, fmt.Errorf("--snapshot-every-bytes: %d is less than 1 MiB", f.snapshotBytes)
	}
	if f.maxHistory < 1 {
		return nil, fmt.Errorf("--max-history-bytes: %d is less than 1", f.maxHistory)
	}
	peers, err := parseCluster(f.cluster)
	if err != nil {
		return nil, err
	}
	if len(peers) == 0 && !f.join {
		peers = []*hivemindv1.Member{{Name: env.Common.NodeName, PeerAddress: env.Common.AdvertiseAddr, GrpcAddress: env.Common.AdvertiseAddr}}
	}
	r, err := replica.New(replica.Config{
		Name:    env.Common.NodeName,
		Cluster: peers,
		Raft: raftnode.Config{
			DataDir:       filepath.Join(env.Common.DataDir, "raft"),
			Join:          f.join,
			TickInterval:  f.tick,
			ElectionTicks: f.electionTicks,
			SnapshotEvery: f.snapshotEvery,
			// The log kept behind a snapshot for slow followers is bounded
			// in bytes as well as entries, by the same amount.
			SnapshotEveryBytes:  f.snapshotBytes,
			SnapshotMarginBytes: f.snapshotBytes,
		},
		FSM:   fsm.Config{MaxRevisions: f.maxRevisions, MaxHistoryBytes: f.maxHistory},
		Watch: watch.Config{MaxWatches: f.maxWatches, MaxWatchesPerCaller: f.maxPerCaller, Caller: daemon.Caller},
		// Raft streams and forwarded writes go to the other members as this
		// node: TLS when configured, authenticated with the cluster secret.
		Dial:         env.Client,
		Logger:       env.Logger,
		MaxClockSkew: f.maxClockSkew,
	})
	if err != nil {
		return nil, err
	}
	cp := api.New(r, r.Hub(), ownership{})
	hivemindv1.RegisterControlPlaneServer(env.Server.GRPC(), cp)
	raftv1.RegisterRaftServer(env.Server.GRPC(), r.RaftService())

	// Membership: this node joins the registry it serves, gossips, and
	// while it leads, reconciles gossip into the registry.
	var node *cluster.Node
	rec := members.NewReconciler(members.ReconcilerConfig{
		Store:    r,
		IsLeader: r.Node().IsLeader,
		Gossip:   members.ObserverFunc(func() map[string]members.Observation { return members.Observe(node.Agent()) }),
		Interval: f.reconcileEvery,
		Grace:    f.memberGrace,
		Logger:   env.Logger,
	})
	local := &members.Local{Store: r, Hub: r.Hub(), Key: env.NodeKey}
	// Node keys and ticket issuers are checked against this member's own
	// replica.
	bindings := &members.Bindings{Machine: r.Machine(), IsPeer: r.IsPeer}
	env.Members.Set(bindings)
	node, err = env.NewClusterNode("controlplane", daemon.ClusterOptions{
		Local:   local,
		Epoch:   r.Machine().Epoch,
		Issuers: bindings.IssuerKey,
		Tune:    func(c *cluster.NodeConfig) { c.OnGossip = func(gossip.Event) { rec.Poke() } },
	})
	if err != nil {
		_ = r.Stop(ctx)
		return nil, err
	}
	if f.backupDir != "" {
		sched, err := backup.NewScheduler(backup.SchedulerConfig{
			Dir: f.backupDir, Interval: f.backupEvery, Retain: f.backupRetain,
			Source: r, IsLeader: r.Node().IsLeader, Registry: env.Registry, Logger: env.Logger,
		})
		if err != nil {
			_ = r.Stop(ctx)
			return nil, err
		}
		go sched.Run(ctx)
	}
	r.Start()
	node.Start(ctx)
	go rec.Run(ctx)
	go serveOnceLed(ctx, env, r)
	return func(ctx context.Context) error {
		// Append streams end first, so their clients move on while this
		// member still answers; the leave is committed while it still takes
		// part.
		cp.Close()
		return errors.Join(node.Stop(ctx), r.Stop(ctx))
	}, nil
}

// serveOnceLed reports SERVING once this member has seen a leader, so that
// "healthy" means the cluster formed. It stays SERVING when the quorum is
// lost later: stale reads and Status still answer, and Status says why the
// member is degraded.
func serveOnceLed(ctx context.Context, env *daemon.Env, r *replica.Replica) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for r.Node().Leader() == 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	env.Server.SetServing(true, "hivemind.v1.ControlPlane")
}

// ownership applies the auth package's rules to control-plane writes: a
// node writes under /nodes/ only its own /nodes/<name>/.
type ownership struct{}

func (ownership) CheckKeyWrite(ctx context.Context, key string) error {
	return auth.CheckKeyWrite(ctx, key)
}

func (ownership) CheckPrefixWrite(ctx context.Context, prefix string) error {
	return auth.CheckPrefixWrite(ctx, prefix)
}
