// Package api is the gRPC edge of the control plane: hivemind.v1.ControlPlane.
// It turns calls into raft commands and reads, and is the only place where
// errors become gRPC status codes.
package api

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
	"github.com/hivemind/hivemind/services/controlplane/internal/replica"
	"github.com/hivemind/hivemind/services/controlplane/internal/watch"
)

// Store is what the API needs from the replicated store.
type Store interface {
	// Propose replicates cmd through raft (forwarding to the leader when
	// needed) and returns its result once applied on this node.
	Propose(ctx context.Context, cmd *raftv1.Command) (*raftv1.Result, error)
	// ReadIndex returns once this node has applied everything committed
	// before the call: reads after it are linearizable.
	ReadIndex(ctx context.Context) error
	// Machine is the local state machine, for reads.
	Machine() *fsm.Machine
	// Header describes the state a read or write reflects.
	Header(rev int64, stale bool) *hivemindv1.ResponseHeader
	Status(ctx context.Context) (*hivemindv1.StatusResponse, error)
	Members() []*hivemindv1.Member
	MemberAdd(ctx context.Context, req *hivemindv1.MemberAddRequest) (*hivemindv1.Member, error)
	MemberRemove(ctx context.Context, req *hivemindv1.MemberRemoveRequest) error
	// ClusterID and Name identify the member in snapshot headers.
	ClusterID() uint64
	Name() string
}

// WriteGuard decides whether the caller in ctx may write a key, or every
// key under a prefix; it returns a status error (PERMISSION_DENIED) when
// not. The binary uses the auth package's ownership rules (a node writes
// only its own /nodes/<name>/).
type WriteGuard interface {
	CheckKeyWrite(ctx context.Context, key string) error
	CheckPrefixWrite(ctx context.Context, prefix string) error
}

// Server implements hivemindv1.ControlPlaneServer.
type Server struct {
	hivemindv1.UnimplementedControlPlaneServer
	store Store
	hub   *watch.Hub
	guard WriteGuard

	closing   chan struct{} // closed by Close
	closeOnce sync.Once
}

// New returns the API over store, serving watches from hub. A nil guard
// lets every authenticated caller write every key.
func New(store Store, hub *watch.Hub, guard WriteGuard) *Server {
	return &Server{store: store, hub: hub, guard: guard, closing: make(chan struct{})}
}

// Close tells the server that its member is shutting down: AppendEvents
// streams answer the appends in flight, refuse new ones with UNAVAILABLE and
// end, so that their clients move to another member while this one still
// serves them. Unary calls are not affected.
func (s *Server) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
}

// checkWrites applies the namespace rules and the guard to every key a
// write names, before anything is proposed, so a refused write changes
// nothing.
func (s *Server) checkWrites(ctx context.Context, keys []string, prefixes []string) error {
	if err := s.checkNamespaceWrites(ctx, keys, prefixes); err != nil {
		return err
	}
	if s.guard == nil {
		return nil
	}
	for _, k := range keys {
		if err := s.guard.CheckKeyWrite(ctx, k); err != nil {
			return err
		}
	}
	for _, p := range prefixes {
		if err := s.guard.CheckPrefixWrite(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// txnWrites lists the keys and prefixes a transaction may write, in both
// branches.
func txnWrites(req *hivemindv1.TxnRequest) (keys, prefixes []string) {
	for _, ops := range [][]*hivemindv1.TxnOp{req.GetSuccess(), req.GetFailure()} {
		for _, op := range ops {
			switch o := op.GetOp().(type) {
			case *hivemindv1.TxnOp_Put:
				keys = append(keys, o.Put.GetKey())
			case *hivemindv1.TxnOp_Delete:
				if o.Delete.GetPrefix() {
					prefixes = append(prefixes, o.Delete.GetKey())
				} else {
					keys = append(keys, o.Delete.GetKey())
				}
			}
		}
	}
	return keys, prefixes
}

// ToStatus chooses the gRPC status for an error from inside the control
// plane; every gRPC edge of the control plane uses it.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var fe *fsm.FieldError
	switch {
	case errors.As(err, &fe):
		return status.Error(fe.Code, fe.Error())
	case errors.Is(err, fsm.ErrCompacted):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, watch.ErrTooManyWatches):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, replica.ErrNoQuorum), errors.Is(err, replica.ErrUnavailable):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, replica.ErrBadRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, replica.ErrFailedPrecondition):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, replica.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// propose is Propose through the server's store.
func (s *Server) propose(ctx context.Context, cmd *raftv1.Command) (*raftv1.Result, error) {
	return Propose(ctx, s.store, cmd)
}

// Proposer replicates a command (Store, the replica).
type Proposer interface {
	Propose(ctx context.Context, cmd *raftv1.Command) (*raftv1.Result, error)
}

// Propose validates cmd, replicates it through p and turns a rejection
// recorded in the result into a status error: how every gRPC edge of the
// control plane writes.
func Propose(ctx context.Context, p Proposer, cmd *raftv1.Command) (*raftv1.Result, error) {
	if err := fsm.ValidateCommand(cmd); err != nil {
		return nil, ToStatus(err)
	}
	res, err := p.Propose(ctx, cmd)
	if err != nil {
		return nil, ToStatus(err)
	}
	if res.GetCode() != 0 {
		return nil, status.Error(codes.Code(res.GetCode()), res.GetMessage())
	}
	return res, nil
}

// answerOf returns a copy of a write's result to put a header on: the
// result is shared with the state machine's idempotency window and must not
// be changed. The copy is shallow: the messages inside it (an event, a
// key's value) are shared, read only, with the state machine, which never
// changes a stored message either.
func answerOf[M proto.Message](res M) M {
	src := res.ProtoReflect()
	out := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		out.Set(fd, v)
		return true
	})
	return out.Interface().(M)
}

// answeredBy completes the header a write's result carries (revision and
// epoch, the same on every member) with who answered and in which term.
func (s *Server) answeredBy(h *hivemindv1.ResponseHeader) *hivemindv1.ResponseHeader {
	local := s.store.Header(h.GetRevision(), false)
	local.Epoch = h.GetEpoch()
	return local
}

// read waits for a linearizable read point unless the caller accepts stale.
func (s *Server) read(ctx context.Context, stale bool) error {
	if stale {
		return nil
	}
	return ToStatus(s.store.ReadIndex(ctx))
}

// Status implements hivemindv1.ControlPlaneServer.
func (s *Server) Status(ctx context.Context, _ *hivemindv1.StatusRequest) (*hivemindv1.StatusResponse, error) {
	st, err := s.store.Status(ctx)
	return st, ToStatus(err)
}

// AppendEvent implements hivemindv1.ControlPlaneServer. The event's source
// is the caller (see checkAppend); on a server without authentication, the
// member that took the call.
func (s *Server) AppendEvent(ctx context.Context, req *hivemindv1.AppendEventRequest) (*hivemindv1.AppendEventResponse, error) {
	source, err := s.checkAppend(ctx, req)
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Source: source, Op: &raftv1.Command_AppendEvent{AppendEvent: req}})
	if err != nil {
		return nil, err
	}
	// The hottest write builds its shallow copy by hand (answerOf goes
	// through reflection).
	ev := res.GetAppendEvent()
	return &hivemindv1.AppendEventResponse{Header: s.answeredBy(ev.GetHeader()), Event: ev.GetEvent()}, nil
}

// Put implements hivemindv1.ControlPlaneServer.
func (s *Server) Put(ctx context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error) {
	if err := s.checkWrites(ctx, []string{req.GetKey()}, nil); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Op: &raftv1.Command_Put{Put: req}})
	if err != nil {
		return nil, err
	}
	out := answerOf(res.GetPut())
	out.Header = s.answeredBy(out.GetHeader())
	return out, nil
}

// Delete implements hivemindv1.ControlPlaneServer.
func (s *Server) Delete(ctx context.Context, req *hivemindv1.DeleteRequest) (*hivemindv1.DeleteResponse, error) {
	keys, prefixes := []string{req.GetKey()}, []string(nil)
	if req.GetPrefix() {
		keys, prefixes = nil, keys
	}
	if err := s.checkWrites(ctx, keys, prefixes); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Op: &raftv1.Command_Delete{Delete: req}})
	if err != nil {
		return nil, err
	}
	out := answerOf(res.GetDelete())
	out.Header = s.answeredBy(out.GetHeader())
	return out, nil
}

// Txn implements hivemindv1.ControlPlaneServer.
func (s *Server) Txn(ctx context.Context, req *hivemindv1.TxnRequest) (*hivemindv1.TxnResponse, error) {
	keys, prefixes := txnWrites(req)
	if err := s.checkWrites(ctx, keys, prefixes); err != nil {
		return nil, err
	}
	if err := s.checkTxnReads(ctx, req); err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Op: &raftv1.Command_Txn{Txn: req}})
	if err != nil {
		return nil, err
	}
	out := answerOf(res.GetTxn())
	out.Header = s.answeredBy(out.GetHeader())
	s.hideSecretResults(ctx, out)
	return out, nil
}

// ClaimIntent implements hivemindv1.ControlPlaneServer.
func (s *Server) ClaimIntent(ctx context.Context, req *hivemindv1.ClaimIntentRequest) (*hivemindv1.ClaimIntentResponse, error) {
	res, err := s.propose(ctx, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Op: &raftv1.Command_ClaimIntent{ClaimIntent: req}})
	if err != nil {
		return nil, err
	}
	out := answerOf(res.GetClaimIntent())
	out.Header = s.answeredBy(out.GetHeader())
	return out, nil
}

// CompleteIntent implements hivemindv1.ControlPlaneServer.
func (s *Server) CompleteIntent(ctx context.Context, req *hivemindv1.CompleteIntentRequest) (*hivemindv1.CompleteIntentResponse, error) {
	res, err := s.propose(ctx, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Op: &raftv1.Command_CompleteIntent{CompleteIntent: req}})
	if err != nil {
		return nil, err
	}
	out := answerOf(res.GetCompleteIntent())
	out.Header = s.answeredBy(out.GetHeader())
	return out, nil
}

// ReleaseIntent implements hivemindv1.ControlPlaneServer.
func (s *Server) ReleaseIntent(ctx context.Context, req *hivemindv1.ReleaseIntentRequest) (*hivemindv1.ReleaseIntentResponse, error) {
	res, err := s.propose(ctx, &raftv1.Command{IdempotencyKey: req.GetIdempotencyKey(), Op: &raftv1.Command_ReleaseIntent{ReleaseIntent: req}})
	if err != nil {
		return nil, err
	}
	out := answerOf(res.GetReleaseIntent())
	out.Header = s.answeredBy(out.GetHeader())
	return out, nil
}

// Compact implements hivemindv1.ControlPlaneServer.
func (s *Server) Compact(ctx context.Context, req *hivemindv1.CompactRequest) (*hivemindv1.CompactResponse, error) {
	res, err := s.propose(ctx, &raftv1.Command{Op: &raftv1.Command_Compact{Compact: req}})
	if err != nil {
		return nil, err
	}
	out := answerOf(res.GetCompact())
	out.Header = s.answeredBy(out.GetHeader())
	return out, nil
}

// Get implements hivemindv1.ControlPlaneServer.
func (s *Server) Get(ctx context.Context, req *hivemindv1.GetRequest) (*hivemindv1.GetResponse, error) {
	if err := fsm.ValidateGet(req); err != nil {
		return nil, ToStatus(err)
	}
	if err := s.read(ctx, req.GetStale()); err != nil {
		return nil, err
	}
	m := s.store.Machine()
	kv, found, rev := m.Get(req.GetKey())
	if found && secretKey(req.GetKey()) && !s.readsSecrets(ctx) {
		kv, found = nil, false
	}
	return &hivemindv1.GetResponse{Header: s.store.Header(rev, req.GetStale()), Kv: kv, Found: found}, nil
}

// Range implements hivemindv1.ControlPlaneServer.
func (s *Server) Range(ctx context.Context, req *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error) {
	if err := fsm.ValidateRange(req); err != nil {
		return nil, ToStatus(err)
	}
	if err := s.read(ctx, req.GetStale()); err != nil {
		return nil, err
	}
	var hidden func(string) bool
	if mayCoverSecrets(req.GetPrefix()) && !s.readsSecrets(ctx) {
		hidden = secretKey
	}
	kvs, more, rev := s.store.Machine().RangeHiding(req.GetPrefix(), req.GetStartAfter(), int(req.GetLimit()), req.GetKeysOnly(), hidden)
	return &hivemindv1.RangeResponse{Header: s.store.Header(rev, req.GetStale()), Kvs: kvs, More: more}, nil
}

// Watch implements hivemindv1.ControlPlaneServer.
func (s *Server) Watch(req *hivemindv1.WatchRequest, stream hivemindv1.ControlPlane_WatchServer) error {
	rev := s.store.Machine().Revision()
	if req.GetStartRevision() > rev+1 {
		// A client resuming here after another member went away may be
		// ahead of this member, which can lag the leader a little. Catch up
		// with the cluster before calling the revision one from the future.
		if err := s.store.ReadIndex(stream.Context()); err != nil {
			return ToStatus(err)
		}
		rev = s.store.Machine().Revision()
	}
	if err := fsm.ValidateWatch(req, rev); err != nil {
		return ToStatus(err)
	}
	send := stream.Send
	if mayCoverSecrets(req.GetPrefix()) && !s.readsSecrets(stream.Context()) {
		send = withoutSecrets(send)
	}
	err := s.hub.Serve(stream.Context(), req, send)
	if stream.Context().Err() != nil {
		return nil
	}
	return ToStatus(err)
}

// MemberAdd implements hivemindv1.ControlPlaneServer.
func (s *Server) MemberAdd(ctx context.Context, req *hivemindv1.MemberAddRequest) (*hivemindv1.MemberAddResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "invalid name: must not be empty")
	}
	if req.GetPeerAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "invalid peer_address: must not be empty")
	}
	m, err := s.store.MemberAdd(ctx, req)
	if err != nil {
		return nil, ToStatus(err)
	}
	return &hivemindv1.MemberAddResponse{Header: s.store.Header(s.store.Machine().Revision(), false), Member: m, Members: s.store.Members()}, nil
}

// MemberRemove implements hivemindv1.ControlPlaneServer.
func (s *Server) MemberRemove(ctx context.Context, req *hivemindv1.MemberRemoveRequest) (*hivemindv1.MemberRemoveResponse, error) {
	if req.GetId() == 0 && req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "invalid id: give id or name")
	}
	if err := s.store.MemberRemove(ctx, req); err != nil {
		return nil, ToStatus(err)
	}
	return &hivemindv1.MemberRemoveResponse{Header: s.store.Header(s.store.Machine().Revision(), false), Members: s.store.Members()}, nil
}

// MemberList implements hivemindv1.ControlPlaneServer.
func (s *Server) MemberList(ctx context.Context, _ *hivemindv1.MemberListRequest) (*hivemindv1.MemberListResponse, error) {
	return &hivemindv1.MemberListResponse{Header: s.store.Header(s.store.Machine().Revision(), true), Members: s.store.Members()}, nil
}
