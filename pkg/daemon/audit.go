package daemon

import (
	"context"
	"flag"
	"log/slog"
	"strings"

	"github.com/hivemind/hivemind/pkg/audit"
	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/grpcserver"
)

// AuditFlags configure the audit trail.
type AuditFlags struct {
	Path string
}

func (a *AuditFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.Path, "audit-log", "", "append one JSON line per changing or administrative call and per refused call to this file (\"-\": standard error); empty: no audit log (refusals are still counted in grpc_server_refusals_total)")
}

// auditConfig opens the audit log and says which calls it records: every
// call whose rule needs write, admin or a node (joins, pushes), except the
// raft transport between control-plane members, whose commands are
// recorded where their client's call arrived.
func auditConfig(a AuditFlags, node string, authn *auth.Authenticator, logger *slog.Logger) (grpcserver.Audit, error) {
	l, err := audit.Open(a.Path, node, func(err error) { logger.Error("cannot write the audit log", "err", err) })
	if err != nil {
		return grpcserver.Audit{}, err
	}
	return grpcserver.Audit{
		Log: l,
		Method: func(m string) bool {
			if strings.HasPrefix(m, "/hivemind.raft.v1.Raft/") {
				return false
			}
			r, ok := authn.Policy().Lookup(m)
			return ok && (r == auth.NeedWrite || r == auth.NeedAdmin || r == auth.NodeOnly)
		},
		Caller: func(ctx context.Context) string {
			id, ok := auth.FromContext(ctx)
			if !ok {
				return ""
			}
			return id.Kind.String() + ":" + id.Name
		},
	}, nil
}
