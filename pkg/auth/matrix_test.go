package auth

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/pkg/nodeinfo"
)

// allServices serves every hivemind service (unimplemented ones answer
// UNIMPLEMENTED once past auth) with the default policy.
func allServices(t *testing.T, authn *Authenticator) (*grpcserver.Server, *grpc.ClientConn) {
	t.Helper()
	srv, err := grpcserver.New(grpcserver.Config{Addr: "127.0.0.1:0", Auth: authn, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	g := srv.GRPC()
	hivemindv1.RegisterAuthServer(g, NewServer(ServerConfig{Name: "srv", Secret: mustSecret(t, testSecretA)}))
	hivemindv1.RegisterNodeServer(g, &nodeinfo.Service{Role: "test", NodeName: "srv", Started: time.Now()})
	hivemindv1.RegisterControlPlaneServer(g, hivemindv1.UnimplementedControlPlaneServer{})
	hivemindv1.RegisterMembershipServer(g, hivemindv1.UnimplementedMembershipServer{})
	raftv1.RegisterRaftServer(g, raftv1.UnimplementedRaftServer{})
	hivemindv1.RegisterHostServer(g, hivemindv1.UnimplementedHostServer{})
	hivemindv1.RegisterDNSProcessorServer(g, hivemindv1.UnimplementedDNSProcessorServer{})
	hivemindv1.RegisterNotifierServer(g, hivemindv1.UnimplementedNotifierServer{})
	hivemindv1.RegisterCertificatesServer(g, hivemindv1.UnimplementedCertificatesServer{})

	// A service added to the protos must be added here too, so its methods
	// go through the matrix.
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !strings.HasPrefix(string(fd.Package()), "hivemind.") {
			return true
		}
		for i := 0; i < fd.Services().Len(); i++ {
			name := string(fd.Services().Get(i).FullName())
			if _, ok := g.GetServiceInfo()[name]; !ok {
				t.Errorf("service %s is not registered in the auth matrix test", name)
			}
		}
		return true
	})
	srv.SetServing(true)
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return srv, conn
}

// callAny calls method with an empty request (and, for streams, no
// messages) and returns the status the call ended with.
func callAny(ctx context.Context, conn *grpc.ClientConn, method string, stream bool, tok string) error {
	if tok != "" {
		ctx = withBearer(ctx, tok)
	}
	if !stream {
		return conn.Invoke(ctx, method, &emptypb.Empty{}, &emptypb.Empty{})
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return err
	}
	_ = cs.CloseSend()
	err = cs.RecvMsg(&emptypb.Empty{})
	if err == io.EOF {
		return nil
	}
	return err
}

func TestEveryMethodOfEveryServiceHasARuleThatHolds(t *testing.T) {
	tokens := NewTokens(nil)
	ops := map[string]string{} // name → token
	var cfg strings.Builder
	for name, scopes := range map[string]string{
		"all": "read,write,admin,filter", "ro": "read", "rw": "read,write", "filt": "filter",
	} {
		ops[name] = GenerateAPIToken()
		cfg.WriteString(name + "=" + ops[name] + ":" + scopes + ";")
	}
	operators, err := ParseAPITokens(cfg.String())
	if err != nil {
		t.Fatal(err)
	}
	host1 := Identity{Name: "host-1", Kind: KindNode, Scopes: nodeScopes, Roles: []string{RoleHost}, Key: testKey.Public()}
	node, _ := tokens.Issue(host1, 0)
	expired, _ := NewTokens(func() time.Time { return time.Now().Add(-time.Hour) }).Issue(host1, time.Minute)
	// Minted by another process (another server, or anyone holding the
	// cluster secret): only the issuer's key verifies a session token.
	forged, _ := NewTokens(nil).Issue(host1, 0)
	// A member that left (no longer in the registry), and a name whose
	// binding moved to another key since the token was issued.
	left, _ := tokens.Issue(Identity{Name: "host-2", Kind: KindNode, Scopes: nodeScopes, Roles: []string{RoleHost}, Key: NewNodeKey().Public()}, 0)
	rebound, _ := tokens.Issue(Identity{Name: "host-1", Kind: KindNode, Scopes: nodeScopes, Roles: []string{RoleHost}, Key: NewNodeKey().Public()}, 0)
	// A node admitted with the secret whose name is not bound yet.
	joining, _ := tokens.Issue(Identity{Name: "host-9", Kind: KindNode, Joining: true, Key: NewNodeKey().Public()}, 0)

	members := NewDirectory()
	members.Set(testMembers)
	authn := NewAuthenticator(NewPolicy(), tokens, operators, members)
	srv, conn := allServices(t, authn)

	// Who is refused and who gets through, per requirement.
	refused := map[Requirement][]string{
		NeedRead:  {ops["filt"]},
		NeedWrite: {ops["ro"], ops["filt"]},
		NeedAdmin: {ops["rw"], node},
		NodeOnly:  {ops["all"], ops["rw"]},
	}
	passes := map[Requirement][]string{
		Public:    {""},
		NeedRead:  {ops["ro"], ops["all"], node},
		NeedWrite: {ops["rw"], ops["all"], node},
		NeedAdmin: {ops["all"]},
		NodeOnly:  {node},
	}
	passedAuth := func(err error) bool {
		c := status.Code(err)
		return c != codes.Unauthenticated && c != codes.PermissionDenied
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	methods := 0
	for svc, info := range srv.GRPC().GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			stream := m.IsClientStream || m.IsServerStream
			methods++
			req, ok := authn.Policy().Lookup(full)
			if !ok {
				t.Errorf("%s has no rule in the policy", full)
				continue
			}
			if req != Public && !strings.HasPrefix(svc, "grpc.health.") {
				unauthenticated := map[string]string{"no token": "", "expired token": expired, "another issuer's token": forged, "unknown token": GenerateAPIToken(),
					"malformed token": "hm1.!!", "left member's token": left, "token of a key no longer bound": rebound}
				if full != hivemindv1.Membership_Join_FullMethodName {
					unauthenticated["join-only token"] = joining
				} else if err := callAny(ctx, conn, full, stream, joining); !passedAuth(err) {
					t.Errorf("%s with a join-only token: %v", full, err)
				}
				for what, tok := range unauthenticated {
					if err := callAny(ctx, conn, full, stream, tok); status.Code(err) != codes.Unauthenticated {
						t.Errorf("%s with %s: %v, want UNAUTHENTICATED", full, what, err)
					}
				}
			}
			for _, tok := range refused[req] {
				err := callAny(ctx, conn, full, stream, tok)
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), full) {
					t.Errorf("%s (%s) with a token lacking it: %v, want PERMISSION_DENIED naming the method", full, req, err)
				}
			}
			for _, tok := range passes[req] {
				if err := callAny(ctx, conn, full, stream, tok); !passedAuth(err) {
					t.Errorf("%s (%s) with a sufficient token: %v", full, req, err)
				}
			}
		}
	}
	t.Logf("%d methods checked", methods)
	if methods < 25 {
		t.Fatalf("only %d methods enumerated", methods)
	}
}

func TestUnknownMethodIsDeniedAndRolesAddRules(t *testing.T) {
	tokens := NewTokens(nil)
	authn := NewAuthenticator(NewPolicy(), tokens, nil, nil)
	node, _ := tokens.Issue(Identity{Name: "host-1", Kind: KindNode, Scopes: nodeScopes}, 0)
	ctx := withIncomingBearer(node)
	const m = "/hivemind.v1.Notifier/Subscribe"
	_, err := authn.Authenticate(ctx, m)
	wantCode(t, err, codes.PermissionDenied, m)

	authn.Policy().Set(m, NeedWrite)
	got, err := authn.Authenticate(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	id, ok := FromContext(got)
	if !ok || id.Name != "host-1" || id.Kind != KindNode {
		t.Fatalf("identity in context: %v %v", id, ok)
	}
	// The filter capability is checked by the handler, per request.
	wantCode(t, Require(got, ScopeFilter), codes.PermissionDenied, `"filter"`)
	if err := Require(got, ScopeWrite); err != nil {
		t.Fatal(err)
	}
}

func TestBearerHeaderForms(t *testing.T) {
	tokens := NewTokens(nil)
	authn := NewAuthenticator(NewPolicy(), tokens, nil, nil)
	node, _ := tokens.Issue(Identity{Name: "n", Kind: KindNode, Scopes: nodeScopes}, 0)
	m := hivemindv1.Node_Info_FullMethodName
	for _, h := range []string{"Bearer " + node, "bearer  " + node, "BEARER " + node} {
		if _, err := authn.Authenticate(incoming("authorization", h), m); err != nil {
			t.Errorf("%q: %v", h[:8], err)
		}
	}
	for _, h := range [][]string{{"authorization", node}, {"authorization", "basic " + node}, {"authorization", "bearer "}, {"authorization", "bearer " + node, "authorization", "bearer " + node}} {
		_, err := authn.Authenticate(incoming(h...), m)
		wantCode(t, err, codes.Unauthenticated, "")
	}
}
