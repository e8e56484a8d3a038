package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/nodecert"
)

// TestHostJoinsWithOnlyTheCA starts a TLS cluster without pre-made
// certificates: the control-plane member holds the CA key and issues its
// own certificate; the host agent starts with only the CA certificate and
// the secret, joins, receives a certificate naming it for its own node key,
// serves with it and renews it before it expires.
func TestHostJoinsWithOnlyTheCA(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	// Six seconds of validity: renewed about every four.
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1, TLS: true, ExtraArgs: []string{"--tls-cert-validity", "6s"}})
	h := c.Add("h1", "host", "--address", "10.0.0.1")
	c.WaitHealthy("h1", 30*time.Second)

	caPEM, err := os.ReadFile(c.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	key, err := auth.LoadOrCreateNodeKey(h.Dir)
	if err != nil {
		t.Fatal(err)
	}
	stored := func() *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(h.Dir, nodecert.CertFile))
		if err != nil {
			return nil
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			return nil
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil
		}
		return cert
	}
	served := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", h.GRPC, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("TLS to h1: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}

	first := stored()
	if first == nil {
		t.Fatal("h1 is healthy but holds no certificate")
	}
	name, certKey, issued := auth.IssuedTo(first)
	if !issued || name != "h1" || !auth.SameKey(certKey, ed25519.PublicKey(key.Public())) {
		t.Fatalf("h1's certificate is issued to %q (issued %v), key is its node key: %v", name, issued, auth.SameKey(certKey, key.Public()))
	}
	if _, err := first.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("h1's certificate does not verify against the CA: %v", err)
	}
	if life := first.NotAfter.Sub(first.NotBefore); life > 10*time.Second {
		t.Fatalf("h1's certificate lives %s; the control plane was told 6s", life)
	}
	// The registry binds h1 to the key the certificate certifies.
	resp, err := hivemindv1.NewMembershipClient(c.Dial("cp1")).ListMembers(context.Background(), &hivemindv1.ListMembersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range resp.GetMembers() {
		if m.GetMember().GetName() == "h1" && !auth.SameKey(m.GetMember().GetPublicKey(), certKey) {
			t.Fatal("h1's certificate certifies another key than the registry binds")
		}
	}

	// Renewed before it expires, and served from then on without a restart.
	var renewed *x509.Certificate
	c.WaitFor("h1 to renew its certificate", 20*time.Second, func(context.Context) bool {
		renewed = stored()
		return renewed != nil && renewed.SerialNumber.Cmp(first.SerialNumber) != 0
	})
	if !renewed.NotBefore.Before(first.NotAfter) {
		t.Fatalf("renewed only after expiry: new from %s, old until %s", renewed.NotBefore, first.NotAfter)
	}
	c.WaitFor("h1 to serve a renewed certificate", 20*time.Second, func(context.Context) bool {
		s := served()
		return s.SerialNumber.Cmp(first.SerialNumber) != 0 && time.Now().Before(s.NotAfter)
	})
	// Still a working member: its calls over mTLS reach the control plane.
	cp := c.ControlPlane()
	c.WaitFor("h1's host record", 20*time.Second, func(ctx context.Context) bool {
		r, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: "/nodes/h1/host"})
		return err == nil && r.GetFound()
	})
}
