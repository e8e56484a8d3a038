package daemon

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/devca"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
)

func TestMissingSecretIsAClearError(t *testing.T) {
	var out bytes.Buffer
	code := Run(context.Background(), testRole(nil, nil), []string{"--node-name", "n1"}, &out)
	if code != 2 || !strings.Contains(out.String(), "--cluster-secret") {
		t.Fatalf("exit %d, output %q; want 2 and a message naming --cluster-secret", code, out.String())
	}
}

// startRole runs testRole with args until the test ends.
func startRole(t *testing.T, args ...string) *Env {
	t.Helper()
	started := make(chan *Env, 1)
	var stopped bool
	logs := &syncBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	args = append(args, "--data-dir", t.TempDir())
	go func() { exit <- Run(ctx, testRole(started, &stopped), args, logs) }()
	t.Cleanup(func() { cancel(); <-exit })
	select {
	case env := <-started:
		return env
	case code := <-exit:
		t.Fatalf("exited with %d: %s", code, logs.String())
	case <-time.After(10 * time.Second):
		t.Fatal("role did not start")
	}
	return nil
}

func TestTLSTokensAndHealthcheck(t *testing.T) {
	dir := t.TempDir()
	if err := devca.WriteDir(dir, []string{"n1", "n2"}); err != nil {
		t.Fatal(err)
	}
	op := auth.GenerateAPIToken()
	ro := auth.GenerateAPIToken()
	tokFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokFile, []byte("# operators\nro="+ro+":read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secFile, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsArgs := []string{"--tls-cert", filepath.Join(dir, "n1.pem"), "--tls-key", filepath.Join(dir, "n1-key.pem"), "--tls-ca", filepath.Join(dir, "ca.pem")}
	env := startRole(t, append([]string{"--node-name", "n1", "--cluster-secret-file", secFile,
		"--api-tokens", "ops=" + op + ":read,write,admin,filter", "--api-tokens-file", tokFile,
		"--grpc-addr", "127.0.0.1:0", "--metrics-addr", ""}, tlsArgs...)...)
	addr := env.Server.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// An operator with only the CA (grpcurl -cacert) and a token.
	caOnly, err := tlsconfig.Client(tlsconfig.Files{CA: filepath.Join(dir, "ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	info := func(cfg grpcclient.Config) error {
		cfg.MaxRetries = -1
		conn, err := grpcclient.Dial(addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = hivemindv1.NewNodeClient(conn).Info(ctx, &hivemindv1.InfoRequest{})
		return err
	}
	if err := info(grpcclient.Config{TLS: caOnly, Auth: auth.BearerToken(op)}); err != nil {
		t.Fatalf("operator over TLS: %v", err)
	}
	if err := info(grpcclient.Config{TLS: caOnly, Auth: auth.BearerToken(ro)}); err != nil {
		t.Fatalf("read-only operator from the tokens file: %v", err)
	}
	if err := info(grpcclient.Config{TLS: caOnly}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v, want UNAUTHENTICATED", err)
	}
	if err := info(grpcclient.Config{Auth: auth.BearerToken(op)}); err == nil {
		t.Fatal("plaintext call to a TLS server succeeded")
	}

	// Another node: its own certificate (mTLS) and the cluster secret.
	s, _ := secret.New([]byte(testSecret))
	n2, err := tlsconfig.Client(tlsconfig.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, "n2.pem"), Key: filepath.Join(dir, "n2-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	// Not a member yet: the secret admits it to join and nothing else.
	n2key := auth.NewNodeKey()
	if err := info(grpcclient.Config{TLS: n2, Auth: auth.NewNodeAuth("n2", s, n2key)}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("node not in the registry: %v, want UNAUTHENTICATED", err)
	}
	// A member, bound to its key in the registry the role plugged in.
	env.Members.Set(auth.StaticMembers{"n1": {PublicKey: env.NodeKey.Public()}, "n2": {PublicKey: n2key.Public()}})
	if err := info(grpcclient.Config{TLS: n2, Auth: auth.NewNodeAuth("n2", s, n2key)}); err != nil {
		t.Fatalf("node over mTLS: %v", err)
	}
	// Another process with the secret cannot be n2.
	if err := info(grpcclient.Config{TLS: n2, Auth: auth.NewNodeAuth("n2", s, auth.NewNodeKey())}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("n2's name with another key: %v, want PERMISSION_DENIED", err)
	}
	// A member's credentials over a connection with another node's
	// certificate: n3 is a member, but calls with n2's certificate.
	n3key := auth.NewNodeKey()
	env.Members.Set(auth.StaticMembers{"n1": {PublicKey: env.NodeKey.Public()}, "n2": {PublicKey: n2key.Public()}, "n3": {PublicKey: n3key.Public()}})
	if err := info(grpcclient.Config{TLS: n2, Auth: auth.NewNodeAuth("n3", s, n3key)}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("n3 calling with n2's certificate: %v, want PERMISSION_DENIED naming the certificate", err)
	}
	// Env.Client is that configuration for this node itself.
	if err := info(env.Client); err != nil {
		t.Fatalf("env.Client: %v", err)
	}

	if code := Run(ctx, testRole(nil, nil), append([]string{"healthcheck", "--grpc-addr", addr}, tlsArgs...), io.Discard); code != 0 {
		t.Errorf("healthcheck over TLS: exit %d", code)
	}
}
