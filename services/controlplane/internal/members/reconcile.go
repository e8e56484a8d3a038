package members

import (
	"context"
	"log/slog"
	"time"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Observation is what this node's gossip says of a member.
type Observation struct {
	// State: ALIVE, SUSPECT, FAILED (memberlist's dead) or LEFT.
	State hivemindv1.MemberState
	// Generation the member gossips in its metadata (its incarnation in
	// the registry).
	Generation uint64
}

// Observer is this node's gossip, as the reconciler reads it.
type Observer interface {
	Observe() map[string]Observation
}

// ReconcilerConfig configures a Reconciler. Zero values take defaults.
type ReconcilerConfig struct {
	Store Store
	// IsLeader reports whether this node leads; only the leader proposes.
	IsLeader func() bool
	Gossip   Observer
	// Interval between full passes, which repair anything a lost
	// notification missed. Default 5s.
	Interval time.Duration
	// Grace is how long a member that joined may stay unseen by gossip
	// before it is failed. Default 30s.
	Grace  time.Duration
	Logger *slog.Logger
}

// Reconciler turns gossip into registry state on the leader: the one door
// through which member.alive / suspect / failed / left reach the registry.
// Each change is proposed as an idempotent MemberSetState, so a pass that
// repeats one changes nothing.
type Reconciler struct {
	cfg  ReconcilerConfig
	poke chan struct{}
}

// NewReconciler returns a reconciler; Run runs it.
func NewReconciler(cfg ReconcilerConfig) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Reconciler{cfg: cfg, poke: make(chan struct{}, 1)}
}

// Poke asks for a pass soon; gossip events call it. It never blocks.
func (r *Reconciler) Poke() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// Run passes on every poke and every Interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.poke:
		}
		if r.cfg.IsLeader() {
			r.Pass(ctx)
		}
	}
}

// Pass compares the registry with gossip once and proposes the changes.
func (r *Reconciler) Pass(ctx context.Context) {
	members, _ := r.cfg.Store.Machine().Members()
	seen := r.cfg.Gossip.Observe()
	now := time.Now()
	for _, m := range members {
		want, gen, ok := r.desired(m, seen, now)
		if !ok {
			continue
		}
		cmd := &raftv1.Command{Op: &raftv1.Command_MemberSetState{MemberSetState: &raftv1.MemberSetState{Name: m.GetName(), State: want, Incarnation: gen}}}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := r.cfg.Store.Propose(pctx, cmd)
		cancel()
		switch {
		case err != nil:
			r.cfg.Logger.Warn("member state not recorded; the next pass retries", "member", m.GetName(), "state", want.String(), "err", err)
		case res.GetCode() != 0:
			r.cfg.Logger.Warn("member state refused", "member", m.GetName(), "state", want.String(), "reason", res.GetMessage())
		default:
			r.cfg.Logger.Info("member state recorded", "member", m.GetName(), "from", m.GetState().String(), "to", want.String(), "revision", res.GetRevision())
		}
	}
}

// desired says which state gossip asks for m, if it differs from the
// registry's.
func (r *Reconciler) desired(m *hivemindv1.ClusterMember, seen map[string]Observation, now time.Time) (hivemindv1.MemberState, uint64, bool) {
	if m.GetState() == hivemindv1.MemberState_MEMBER_STATE_LEFT {
		return 0, 0, false
	}
	o, ok := seen[m.GetName()]
	if !ok || o.Generation < m.GetIncarnation() {
		// Gossip has not seen this life of the node. Give a fresh join time
		// to show up; after that, it is as good as dead.
		if m.GetState() == hivemindv1.MemberState_MEMBER_STATE_FAILED || now.Sub(m.GetStateChangedAt().AsTime()) < r.cfg.Grace {
			return 0, 0, false
		}
		return hivemindv1.MemberState_MEMBER_STATE_FAILED, m.GetIncarnation(), true
	}
	if o.State == m.GetState() && o.Generation == m.GetIncarnation() {
		return 0, 0, false
	}
	return o.State, o.Generation, true
}
