package replica_test

import (
	"context"
	"io"
	"testing"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/auth"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
	"github.com/hivemind/hivemind/services/controlplane/internal/replica"
)

func node(name string, roles ...string) context.Context {
	return auth.NewContext(context.Background(), auth.Identity{Name: name, Kind: auth.KindNode, Roles: roles})
}

// A node that holds the cluster secret but is not a control-plane member
// had arbitrary commands applied through Forward; now it is refused and
// nothing is applied.
func TestForwardOnlyFromControlPlaneMembers(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	lead := c.Nodes[c.Leader()].Replica
	rev := lead.Machine().Revision()
	cmd := &raftv1.Command{Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/nodes/host1/host", Value: []byte("forged")}}}
	for _, ctx := range []context.Context{
		node("host-2", auth.RoleHost),
		node("evil"),
		auth.NewContext(context.Background(), auth.Identity{Name: "ops", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeAdmin}}),
	} {
		id, _ := auth.FromContext(ctx)
		_, err := lead.RaftService().Forward(ctx, &raftv1.ForwardRequest{Command: cmd})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Forward from %v: %v, want PERMISSION_DENIED", id, err)
		}
	}
	if got := lead.Machine().Revision(); got != rev {
		t.Fatalf("revision moved from %d to %d: a refused command was applied", rev, got)
	}
	// A member forwards as before.
	follower := c.Nodes[(c.Leader()+1)%3].Name
	if _, err := lead.RaftService().Forward(node(follower, auth.RoleControlPlane), &raftv1.ForwardRequest{Command: cmd}); err != nil {
		t.Fatalf("Forward from member %s: %v", follower, err)
	}
}

// sendStream feeds one batch of raft messages to Raft/Send.
type sendStream struct {
	grpc.ServerStream
	ctx  context.Context
	msgs []*raftpb.Message
	sent bool
}

func (s *sendStream) Context() context.Context { return s.ctx }

func (s *sendStream) Recv() (*raftv1.SendRequest, error) {
	if s.sent {
		return nil, io.EOF
	}
	s.sent = true
	req := &raftv1.SendRequest{}
	for _, m := range s.msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		req.Messages = append(req.Messages, b)
	}
	return req, nil
}

func (s *sendStream) SendAndClose(*raftv1.SendResponse) error { return nil }

// One heartbeat with a higher term and a made-up sender made the leader
// step down. Raft messages are taken only from members, each as itself.
func TestSendOnlyFromMembersAsThemselves(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	li := c.Leader()
	lead := c.Nodes[li].Replica
	other := c.Nodes[(li+1)%3].Name
	third := c.Nodes[(li+2)%3].Name
	term := lead.Node().Status().Term
	heartbeat := func(from string) *raftpb.Message {
		return &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(replica.MemberID(from)), To: proto.Uint64(replica.MemberID(c.Nodes[li].Name)), Term: proto.Uint64(term + 10)}
	}
	for _, tc := range []struct {
		what string
		ctx  context.Context
		msg  *raftpb.Message
	}{
		{"a host with the secret", node("host-2", auth.RoleHost), heartbeat("host-2")},
		{"a host naming a member as sender", node("host-2", auth.RoleHost), heartbeat(other)},
		{"a member sending as another member", node(other, auth.RoleControlPlane), heartbeat(third)},
	} {
		err := lead.RaftService().Send(&sendStream{ctx: tc.ctx, msgs: []*raftpb.Message{tc.msg}})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: %v, want PERMISSION_DENIED", tc.what, err)
		}
	}
	time.Sleep(300 * time.Millisecond) // several heartbeats: a step-down would show
	if !lead.Node().IsLeader() || lead.Node().Status().Term != term {
		t.Fatalf("leader %s stepped down or moved term (%d → %d) after refused messages", c.Nodes[li].Name, term, lead.Node().Status().Term)
	}
}
