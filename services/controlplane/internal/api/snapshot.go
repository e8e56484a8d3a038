package api

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/backup"
)

// snapshotChunk is the data carried by one SnapshotResponse: well under the
// default 4 MiB message limit of clients.
const snapshotChunk = 1 << 20

// Snapshot streams a snapshot file of this member's state. Unless stale is
// set, the member first catches up with everything committed before the
// call, so the snapshot holds every write acknowledged before it.
func (s *Server) Snapshot(req *hivemindv1.SnapshotRequest, stream grpc.ServerStreamingServer[hivemindv1.SnapshotResponse]) error {
	ctx := stream.Context()
	// The policy already asks for the admin scope; the snapshot holds the
	// notifier's secrets, which this edge hides from everyone else, so it
	// checks again here rather than rely on one rule elsewhere.
	if id, ok := auth.FromContext(ctx); ok && !(id.Kind == auth.KindOperator && id.Has(auth.ScopeAdmin)) {
		return status.Errorf(codes.PermissionDenied, "%s %s may not take a snapshot: it holds every key, secrets included; only operators with the admin scope may", id.Kind, id.Name)
	}
	if !req.GetStale() {
		if err := s.store.ReadIndex(ctx); err != nil {
			return ToStatus(err)
		}
	}
	hdr, state, err := backup.Take(s.store, time.Now())
	if err != nil {
		return ToStatus(err)
	}
	c := &backup.Chunker{Send: stream.Send, Header: hdr, Size: snapshotChunk}
	sum, err := backup.Encode(c, hdr, state)
	if err != nil {
		return err
	}
	return c.Finish(sum)
}
