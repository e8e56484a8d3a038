package daemon

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/devca"
)

// Issued certificates need the CA; a control-plane member needs a
// certificate before any join, so --tls-ca alone is refused there; each
// refusal names the flag.
func TestIssuedCertificateFlagsAreCheckedAtStart(t *testing.T) {
	dir := t.TempDir()
	if err := devca.WriteDir(dir, nil); err != nil {
		t.Fatal(err)
	}
	ca, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	other := t.TempDir()
	if err := devca.WriteDir(other, nil); err != nil {
		t.Fatal(err)
	}
	cp := testRole(nil, nil)
	cp.Name = auth.RoleControlPlane
	for _, c := range []struct {
		what string
		args []string
		want string
	}{
		{"a CA key without the CA", []string{"--tls-ca-key", caKey}, "--tls-ca-key needs --tls-ca"},
		{"a member with the CA alone", []string{"--tls-ca", ca}, "--tls-ca-key"},
		{"another CA's key", []string{"--tls-ca", ca, "--tls-ca-key", filepath.Join(other, "ca-key.pem")}, "--tls-ca-key: the key does not belong"},
		{"a zero validity", []string{"--tls-ca", ca, "--tls-ca-key", caKey, "--tls-cert-validity", "0s"}, "--tls-cert-validity"},
	} {
		var out bytes.Buffer
		args := append([]string{"--node-name", "cp1", "--cluster-secret", testSecret, "--data-dir", t.TempDir()}, c.args...)
		if code := Run(context.Background(), cp, args, &out); code != 2 || !strings.Contains(out.String(), c.want) {
			t.Errorf("%s: exit %d, output %q; want 2 and %q", c.what, code, out.String(), c.want)
		}
	}
	// Other roles have no CA key to hold.
	var out bytes.Buffer
	if code := Run(context.Background(), testRole(nil, nil), []string{"--node-name", "n1", "--cluster-secret", testSecret, "--data-dir", t.TempDir(), "--tls-ca-key", caKey}, &out); code != 2 {
		t.Errorf("--tls-ca-key on a host-like role: exit %d, want 2 (unknown flag)", code)
	}
}

// A node with the CA alone starts, serves TLS only once it holds a
// certificate, and exposes the source it will install it into.
func TestNodeWithTheCAAloneWaitsForItsCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := devca.WriteDir(dir, nil); err != nil {
		t.Fatal(err)
	}
	env := startRole(t, "--node-name", "n1", "--cluster-secret", testSecret, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "", "--tls-ca", filepath.Join(dir, "ca.pem"))
	if env.NodeCert == nil || env.NodeCert.Leaf() != nil {
		t.Fatalf("node certificate source %v; want one, empty", env.NodeCert)
	}
	if _, err := env.NodeCert.ServerCertificate(); err == nil {
		t.Fatal("the server would present a certificate it does not have")
	}
}
