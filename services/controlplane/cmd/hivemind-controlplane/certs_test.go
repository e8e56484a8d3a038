package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/clustertest"
)

// TestIssueNodeCertificateByName runs the control-plane binary holding the
// CA key and asks it for certificates as the nodes it admitted, as an
// operator and as a name not joined: each node gets one naming it for the
// key its registry entry binds, and nobody else gets one.
func TestIssueNodeCertificateByName(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1, TLS: true})
	caPEM, err := os.ReadFile(c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{"h1", "h2"} {
		c.JoinAs(name, auth.RoleHost)
		resp, err := c.ControlPlaneAs(name).IssueNodeCertificate(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		blk, _ := pem.Decode(resp.GetCertificatePem())
		if blk == nil {
			t.Fatalf("%s: no PEM certificate", name)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		key, err := auth.LoadOrCreateNodeKey(c.KeyDir(name))
		if err != nil {
			t.Fatal(err)
		}
		got, certKey, issued := auth.IssuedTo(cert)
		if !issued || got != name || !auth.SameKey(certKey, key.Public()) {
			t.Errorf("%s got a certificate issued to %q for its own key: %v", name, got, auth.SameKey(certKey, key.Public()))
		}
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s's certificate does not verify against the CA: %v", name, err)
		}
		if resp.GetIssuedBy() != "cp1" {
			t.Errorf("issued_by %q", resp.GetIssuedBy())
		}
	}
	if _, err := c.ControlPlane().IssueNodeCertificate(ctx); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an admin operator: %v, want PERMISSION_DENIED", err)
	}
	if _, err := c.ControlPlaneAs("h9").IssueNodeCertificate(ctx); err == nil || !strings.Contains(err.Error(), "not a member yet") {
		t.Errorf("a name not joined: %v, want a refusal saying it is not a member yet", err)
	}
}
