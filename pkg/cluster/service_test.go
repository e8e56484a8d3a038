package cluster

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// recordingRegistry accepts every join and leave and remembers them.
type recordingRegistry struct {
	Registry
	joins, leaves []string
}

func (r *recordingRegistry) Join(_ context.Context, req *hivemindv1.JoinRequest) (*hivemindv1.JoinResponse, error) {
	r.joins = append(r.joins, req.GetName())
	return &hivemindv1.JoinResponse{}, nil
}

func (r *recordingRegistry) Leave(_ context.Context, req *hivemindv1.LeaveRequest) (*hivemindv1.LeaveResponse, error) {
	r.leaves = append(r.leaves, req.GetName())
	return &hivemindv1.LeaveResponse{}, nil
}

func as(id auth.Identity) context.Context { return auth.NewContext(context.Background(), id) }

func signedJoin(name string, key auth.NodeKey) *hivemindv1.JoinRequest {
	req := &hivemindv1.JoinRequest{Name: name, Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "127.0.0.1:1", Incarnation: 7}
	key.SignJoin(req)
	return req
}

// A node joins and leaves only as itself: under another node's name it
// could rewrite that node's address or make it vanish.
func TestJoinAndLeaveOnlyForOneself(t *testing.T) {
	k1, k2 := auth.NewNodeKey(), auth.NewNodeKey()
	newcomer := auth.Identity{Name: "host-1", Kind: auth.KindNode, Joining: true, Key: k1.Public()}
	member2 := auth.Identity{Name: "host-2", Kind: auth.KindNode, Roles: []string{auth.RoleHost}, Key: k2.Public()}
	admin := auth.Identity{Name: "ops", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeAdmin}}
	writer := auth.Identity{Name: "ci", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeWrite}}

	tampered := signedJoin("host-1", k1)
	tampered.Incarnation = 999
	foreignKey := signedJoin("host-1", k2)
	for _, tc := range []struct {
		what string
		ctx  context.Context
		req  *hivemindv1.JoinRequest
		code codes.Code
	}{
		{"a newcomer as itself", as(newcomer), signedJoin("host-1", k1), codes.OK},
		{"a member passing a signed join on", as(member2), signedJoin("host-1", k1), codes.OK},
		{"a newcomer as another name", as(newcomer), signedJoin("host-3", k1), codes.PermissionDenied},
		{"as itself with a key other than the one it proved", as(newcomer), foreignKey, codes.PermissionDenied},
		{"a member passing on a join signed with another key", as(member2), foreignKey, codes.OK},
		{"altered after signing", as(member2), tampered, codes.PermissionDenied},
		{"unsigned", as(member2), &hivemindv1.JoinRequest{Name: "host-1", PublicKey: k1.Public()}, codes.PermissionDenied},
		{"an operator", as(admin), signedJoin("host-1", k1), codes.PermissionDenied},
	} {
		s := &Service{Registry: &recordingRegistry{}}
		_, err := s.Join(tc.ctx, tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("join, %s: %v, want %v", tc.what, err, tc.code)
		}
	}
	// The member passing on a join signed with another key than host-1's
	// gets through here: the control plane's registry refuses it unless
	// that key is the one host-1 is bound to (fsm TestMemberRegistry).

	for _, tc := range []struct {
		what string
		ctx  context.Context
		code codes.Code
	}{
		{"itself", as(member2), codes.OK},
		{"an admin operator", as(admin), codes.OK},
		{"another node", as(auth.Identity{Name: "host-3", Kind: auth.KindNode, Roles: []string{auth.RoleHost}}), codes.PermissionDenied},
		{"a write operator", as(writer), codes.PermissionDenied},
	} {
		reg := &recordingRegistry{}
		s := &Service{Registry: reg}
		_, err := s.Leave(tc.ctx, &hivemindv1.LeaveRequest{Name: "host-2"})
		if status.Code(err) != tc.code || (tc.code != codes.OK) != (len(reg.leaves) == 0) {
			t.Errorf("leave of host-2 by %s: %v (registry saw %v), want %v", tc.what, err, reg.leaves, tc.code)
		}
	}
}
