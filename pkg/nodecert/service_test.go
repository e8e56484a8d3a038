package nodecert

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/grpcserver"
	"github.com/hivemind/hivemind/pkg/nodeinfo"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
)

const testSecret = "nodecert-test-secret-0123456789"

// issuingMember is a control-plane member as the daemon sets one up with
// --tls-ca and --tls-ca-key: it serves TLS with its own issued certificate
// and issues certificates to nodes bound in members.
type issuingMember struct {
	addr    string
	ca      *testCA
	members *auth.Directory
}

func startIssuingMember(t *testing.T, ca *testCA, validity time.Duration, members auth.StaticMembers) *issuingMember {
	t.Helper()
	iss := ca.issuer(t, validity, nil)
	key := auth.NewNodeKey()
	src, err := NewSource(t.TempDir(), "cp1", key, ca.pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	own, _, err := iss.Issue("cp1", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Install(own); err != nil {
		t.Fatal(err)
	}
	srvTLS, err := tlsconfig.ServerConfigFrom(src, ca.certFile())
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := secret.New([]byte(testSecret))
	dir := auth.NewDirectory()
	dir.Set(members)
	ops, err := auth.ParseAPITokens("ops=" + adminToken + ":read,write,admin,filter")
	if err != nil {
		t.Fatal(err)
	}
	tokens := auth.NewTokens(nil)
	srv, err := grpcserver.New(grpcserver.Config{
		Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Auth: auth.NewAuthenticator(auth.NewPolicy(), tokens, ops, dir), TLS: credentials.NewTLS(srvTLS),
	})
	if err != nil {
		t.Fatal(err)
	}
	g := srv.GRPC()
	hivemindv1.RegisterAuthServer(g, auth.NewServer(auth.ServerConfig{Name: "cp1", Secret: sec, Tokens: tokens, Members: dir}))
	hivemindv1.RegisterNodeServer(g, &nodeinfo.Service{Role: "controlplane", NodeName: "cp1", Started: time.Now()})
	hivemindv1.RegisterCertificatesServer(g, &Service{NodeName: "cp1", Issuer: iss, Members: dir})
	srv.SetServing(true)
	go func() { _ = srv.Serve() }()
	t.Cleanup(func() { srv.Stop(context.Background()) })
	return &issuingMember{addr: srv.Addr(), ca: ca, members: dir}
}

var adminToken = auth.GenerateAPIToken()

// nodeClient dials m as node name with key, presenting src's certificate
// (none until it holds one), as the daemon's Env.Client does.
func (m *issuingMember) nodeClient(t *testing.T, name string, key auth.NodeKey, src *Source) *grpcclient.Config {
	t.Helper()
	cfg, err := tlsconfig.ClientConfigFrom(src, m.ca.certFile())
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := secret.New([]byte(testSecret))
	return &grpcclient.Config{TLS: credentials.NewTLS(cfg), Auth: auth.NewNodeAuth(name, sec, key), MaxRetries: -1}
}

func issue(t *testing.T, addr string, cfg grpcclient.Config) (*hivemindv1.IssueNodeCertificateResponse, error) {
	t.Helper()
	conn, err := grpcclient.Dial(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return hivemindv1.NewCertificatesClient(conn).IssueNodeCertificate(ctx, &hivemindv1.IssueNodeCertificateRequest{})
}

// A node with only the CA certificate gets a certificate naming it, for
// the key the registry binds to its name, signed by the CA; it then calls
// over mTLS with it.
func TestNodeWithOnlyTheCAGetsItsCertificate(t *testing.T) {
	ca := newTestCA(t)
	key := auth.NewNodeKey()
	m := startIssuingMember(t, ca, time.Hour, auth.StaticMembers{"host-1": {PublicKey: key.Public(), Roles: []string{auth.RoleHost}, Incarnation: 1}})
	src, err := NewSource(t.TempDir(), "host-1", key, ca.pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := m.nodeClient(t, "host-1", key, src)
	resp, err := issue(t, m.addr, *cfg)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetIssuedBy() != "cp1" {
		t.Errorf("issued_by %q", resp.GetIssuedBy())
	}
	if err := src.Install(resp.GetCertificatePem()); err != nil {
		t.Fatalf("the issued certificate is not good for host-1 and its key: %v", err)
	}
	if !src.Leaf().NotAfter.Equal(resp.GetNotAfter().AsTime()) {
		t.Errorf("not_after %s, certificate says %s", resp.GetNotAfter().AsTime(), src.Leaf().NotAfter)
	}

	// From now on the node presents it: a new connection carries it, and
	// the server sees host-1's certificate.
	conn, err := tls.Dial("tcp", m.addr, mustClientTLS(t, src, ca))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if _, err := issue(t, m.addr, *cfg); err != nil {
		t.Fatalf("a node calling with its issued certificate: %v", err)
	}
}

func mustClientTLS(t *testing.T, src *Source, ca *testCA) *tls.Config {
	t.Helper()
	cfg, err := tlsconfig.ClientConfigFrom(src, ca.certFile())
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"h2"}
	return cfg
}

// Who gets a certificate: a node for itself and its bound key only.
func TestIssueNodeCertificateMatrix(t *testing.T) {
	ca := newTestCA(t)
	host1, host2 := auth.NewNodeKey(), auth.NewNodeKey()
	m := startIssuingMember(t, ca, time.Hour, auth.StaticMembers{
		"host-1": {PublicKey: host1.Public(), Roles: []string{auth.RoleHost}},
		"host-2": {PublicKey: host2.Public(), Roles: []string{auth.RoleHost}},
		// An --initial-cluster peer before its join: no key bound yet.
		"cp2": {Roles: []string{auth.RoleControlPlane}},
	})
	caOnly, err := tlsconfig.Client(tlsconfig.Files{CA: ca.certFile()})
	if err != nil {
		t.Fatal(err)
	}
	sec, _ := secret.New([]byte(testSecret))
	node := func(name string, key auth.NodeKey) grpcclient.Config {
		return grpcclient.Config{TLS: caOnly, Auth: auth.NewNodeAuth(name, sec, key), MaxRetries: -1}
	}
	cases := []struct {
		who  string
		cfg  grpcclient.Config
		code codes.Code
		want string // in the message
	}{
		{"host-2 for itself", node("host-2", host2), codes.OK, ""},
		{"host-2's key under host-1's name", node("host-1", host2), codes.PermissionDenied, "bound to another key"},
		{"a new key under host-1's name", node("host-1", auth.NewNodeKey()), codes.PermissionDenied, "bound to another key"},
		{"a node not joined yet", node("host-9", auth.NewNodeKey()), codes.Unauthenticated, "not a member yet"},
		{"a peer without a bound key", node("cp2", auth.NewNodeKey()), codes.FailedPrecondition, "no key bound"},
		{"an admin operator", grpcclient.Config{TLS: caOnly, Auth: auth.BearerToken(adminToken), MaxRetries: -1}, codes.PermissionDenied, "nodes only"},
		{"no credential", grpcclient.Config{TLS: caOnly, MaxRetries: -1}, codes.Unauthenticated, ""},
	}
	for _, c := range cases {
		resp, err := issue(t, m.addr, c.cfg)
		if status.Code(err) != c.code || !strings.Contains(status.Convert(err).Message(), c.want) {
			t.Errorf("%s: %v, want %s naming %q", c.who, err, c.code, c.want)
			continue
		}
		if c.code != codes.OK {
			continue
		}
		leaf := parsePEM(t, resp.GetCertificatePem())
		name, key, _ := auth.IssuedTo(leaf)
		if name != "host-2" || !auth.SameKey(key, host2.Public()) {
			t.Errorf("%s: issued to %q, for its key: %v", c.who, name, auth.SameKey(key, host2.Public()))
		}
	}
}

// Certificates that TLS must refuse: expired, or from another CA. The
// server's handshake fails, whatever token comes after.
func TestExpiredAndOtherCACertificatesAreRefused(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	key := auth.NewNodeKey()
	m := startIssuingMember(t, ca, time.Hour, auth.StaticMembers{"host-1": {PublicKey: key.Public()}})
	expired, _, err := ca.issuer(t, time.Hour, func() time.Time { return time.Now().Add(-3 * time.Hour) }).Issue("host-1", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := other.issuer(t, time.Hour, nil).Issue("host-1", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	for what, certPEM := range map[string][]byte{"expired": expired, "another CA's": foreign} {
		blk := parsePEM(t, certPEM)
		cfg := &tls.Config{
			RootCAs: ca.pool, NextProtos: []string{"h2"},
			Certificates: []tls.Certificate{{Certificate: [][]byte{blk.Raw}, PrivateKey: key.Signer(), Leaf: blk}},
		}
		conn, err := tls.Dial("tcp", m.addr, cfg)
		if err == nil {
			// TLS 1.3 reports the client certificate's refusal on the first read.
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s certificate: %v, want the handshake refused", what, err)
		}
	}
}
