package daemon

import (
	"context"
	"flag"
	"fmt"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/grpcserver"
)

// LimitFlags bound what one caller can make a node do: how large a request
// may be, and how many calls a caller may start per second.
type LimitFlags struct {
	MaxRequestBytes int
	RateLimit       float64
	RateBurst       int
}

// Rate limit defaults. They are per caller (a node, or an operator token),
// far above what a host agent, dns processor or notifier needs (a notifier
// makes about three calls per delivery), and they do not apply to
// control-plane members (they forward other callers' writes to the leader
// under their own name) or to operators with the admin scope (who can
// compact and remove members anyway; a load generator that must not be
// throttled, like the bench, uses one).
const (
	DefaultRateLimit = 5000
	DefaultRateBurst = 10000
)

func (l *LimitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&l.MaxRequestBytes, "max-request-bytes", grpcserver.DefaultMaxRequestBytes,
		fmt.Sprintf("largest gRPC request message this node reads, in bytes (at least %d); larger ones are refused with RESOURCE_EXHAUSTED", grpcserver.MinMaxRequestBytes))
	fs.Float64Var(&l.RateLimit, "rate-limit", DefaultRateLimit,
		"calls per second each caller (node or operator token) may start; 0 turns the limit off; control-plane members and admin operators are exempt")
	fs.IntVar(&l.RateBurst, "rate-burst", DefaultRateBurst, "calls a caller may start at once above --rate-limit")
}

func (l LimitFlags) validate() error {
	if l.MaxRequestBytes < grpcserver.MinMaxRequestBytes {
		return fmt.Errorf("--max-request-bytes: %d is less than the minimum %d", l.MaxRequestBytes, grpcserver.MinMaxRequestBytes)
	}
	if l.RateLimit < 0 {
		return fmt.Errorf("--rate-limit: %g is negative (0 turns the limit off)", l.RateLimit)
	}
	if l.RateLimit > 0 && l.RateBurst < 1 {
		return fmt.Errorf("--rate-burst: %d is less than 1", l.RateBurst)
	}
	return nil
}

func (l LimitFlags) rateLimit() grpcserver.RateLimit {
	return grpcserver.RateLimit{PerSecond: l.RateLimit, Burst: l.RateBurst, Caller: Caller}
}

// Caller names the caller of a call for the per-caller limits (rate,
// watches): one per authenticated identity (kind and name). Control-plane
// members and admin operators are exempt; public calls carry no identity
// and are not limited.
func Caller(ctx context.Context) (key string, exempt, ok bool) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return "", false, false
	}
	exempt = id.Performs(auth.RoleControlPlane) || id.Kind == auth.KindOperator && id.Has(auth.ScopeAdmin)
	return id.Kind.String() + " " + id.Name, exempt, true
}
