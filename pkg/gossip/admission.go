package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hivemind/hivemind/pkg/ticket"
)

// Reasons a node is refused, as reported in logs and the
// hivemind_gossip_refused_total counter.
const (
	reasonMeta       = "meta"       // metadata does not decode
	reasonTicket     = "ticket"     // no ticket, or one that does not verify for this node
	reasonEpoch      = "epoch"      // a valid ticket for an older epoch
	reasonGeneration = "generation" // an older life of a node already seen
)

// ErrRefused is wrapped by every refusal.
var ErrRefused = errors.New("gossip: node refused")

// refusal says why a node was refused.
type refusal struct {
	reason string
	err    error
}

func (r *refusal) Error() string { return fmt.Sprintf("%v (%s): %v", ErrRefused, r.reason, r.err) }
func (r *refusal) Unwrap() []error {
	return []error{ErrRefused, r.err}
}

// admission decides which nodes may be members: only nodes that carry a
// valid ticket for the current epoch, where the current epoch is the
// highest one seen on a valid ticket (this node's own included).
type admission struct {
	self    string
	issuers ticket.KeyOf
	log     *slog.Logger
	refused *prometheus.CounterVec // nil without a Registerer
	newer   func(epoch uint64, from string)

	mu         sync.Mutex
	epoch      uint64
	generation map[string]uint64         // highest generation admitted per name
	verified   map[string]verifiedTicket // the last ticket that verified, per name
	lastReason map[string]string         // last refusal logged per name, to log changes only
}

// verifiedTicket is a ticket, and the epoch it was shown with, that
// verified for a name.
type verifiedTicket struct {
	raw   string
	epoch uint64
}

// check admits or refuses node. A ticket for a higher epoch raises the
// current epoch and calls newer.
func (a *admission) check(n *memberlist.Node) error {
	m, err := DecodeMeta(n.Meta)
	if err != nil {
		return &refusal{reasonMeta, err}
	}
	// memberlist calls this for every alive message; a ticket checked once
	// is not checked again (a signature check costs far more than the map).
	a.mu.Lock()
	seen := a.verified[n.Name] == verifiedTicket{string(m.Ticket), m.Epoch}
	a.mu.Unlock()
	if !seen {
		if _, err := ticket.Verify(m.Ticket, a.issuers, n.Name, m.Epoch); err != nil {
			return &refusal{reasonTicket, err}
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.verified[n.Name] = verifiedTicket{string(m.Ticket), m.Epoch}
	if m.Epoch < a.epoch {
		return &refusal{reasonEpoch, fmt.Errorf("ticket epoch %d, cluster epoch %d", m.Epoch, a.epoch)}
	}
	if g := a.generation[n.Name]; m.Incarnation < g {
		return &refusal{reasonGeneration, fmt.Errorf("generation %d, already seen %d", m.Incarnation, g)}
	}
	a.generation[n.Name] = m.Incarnation
	delete(a.lastReason, n.Name)
	if m.Epoch > a.epoch {
		a.epoch = m.Epoch
		a.log.Info("gossip: member has a ticket for a newer epoch", "member", n.Name, "epoch", m.Epoch)
		a.newer(m.Epoch, n.Name)
	}
	return nil
}

// setOwnEpoch raises the current epoch to this node's new ticket's.
func (a *admission) setOwnEpoch(e uint64) {
	a.mu.Lock()
	a.epoch = max(a.epoch, e)
	a.mu.Unlock()
}

func (a *admission) currentEpoch() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.epoch
}

// report logs and counts a refusal; a node refused again for the same
// reason is logged at debug level only, since it is re-announced often.
func (a *admission) report(n *memberlist.Node, via string, err error) {
	reason := "unknown"
	var r *refusal
	if errors.As(err, &r) {
		reason = r.reason
	}
	if a.refused != nil {
		a.refused.WithLabelValues(reason).Inc()
	}
	a.mu.Lock()
	first := a.lastReason[n.Name] != reason
	a.lastReason[n.Name] = reason
	a.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	a.log.Log(context.Background(), level, "gossip: refused node", "node", n.Name, "addr", n.Address(), "via", via, "reason", reason, "err", err)
}

// NotifyAlive is memberlist's AliveDelegate: it filters every alive
// message, from gossip or a state exchange. This node is always admitted;
// memberlist itself settles messages about it.
func (a *admission) NotifyAlive(n *memberlist.Node) error {
	if n.Name == a.self {
		return nil
	}
	if err := a.check(n); err != nil {
		a.report(n, "alive", err)
		return err
	}
	return nil
}

// NotifyMerge is memberlist's MergeDelegate, consulted when a node joins
// through us or we join through it. The whole exchange is refused when any
// alive node in it carries no valid ticket at all: that state is not this
// cluster's. Nodes refused for an older epoch or generation are left to
// NotifyAlive, which drops them one by one, so that joins go on while the
// cluster moves to a new epoch.
func (a *admission) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if n.Name == a.self || n.State != memberlist.StateAlive {
			continue
		}
		err := a.check(n)
		if err == nil {
			continue
		}
		a.report(n, "merge", err)
		var r *refusal
		if errors.As(err, &r) && (r.reason == reasonMeta || r.reason == reasonTicket) {
			return err
		}
	}
	return nil
}
