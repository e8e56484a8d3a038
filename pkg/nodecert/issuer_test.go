package nodecert

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/devca"
)

// testCA is a dev CA written to a directory, as `make certs` leaves it.
type testCA struct {
	dir     string
	ca      *devca.CA
	certPEM []byte
	pool    *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	dir := t.TempDir()
	if err := devca.WriteDir(dir, nil); err != nil {
		t.Fatal(err)
	}
	cb, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	kb, _ := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	ca, err := devca.Parse(cb, kb)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cb)
	return &testCA{dir: dir, ca: ca, certPEM: cb, pool: pool}
}

func (c *testCA) certFile() string { return filepath.Join(c.dir, "ca.pem") }
func (c *testCA) keyFile() string  { return filepath.Join(c.dir, "ca-key.pem") }

func (c *testCA) issuer(t *testing.T, validity time.Duration, now func() time.Time) *Issuer {
	t.Helper()
	i, err := NewIssuer(c.ca.CertPEM, c.ca.KeyPEM, validity, now)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func parsePEM(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIssuedCertificateNamesTheNodeAndCertifiesItsKey(t *testing.T) {
	ca := newTestCA(t)
	iss, err := LoadIssuer(ca.certFile(), ca.keyFile(), 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key := auth.NewNodeKey()
	certPEM, notAfter, err := iss.Issue("host-1", key.Public())
	if err != nil {
		t.Fatal(err)
	}
	c := parsePEM(t, certPEM)
	name, k, issued := auth.IssuedTo(c)
	if !issued || name != "host-1" || !auth.SameKey(k, key.Public()) {
		t.Fatalf("issued to %q (issued %v), key match %v", name, issued, auth.SameKey(k, key.Public()))
	}
	if err := c.VerifyHostname("host-1"); err != nil {
		t.Errorf("DNS SAN: %v", err)
	}
	if err := c.VerifyHostname("host-2"); err == nil {
		t.Error("the certificate is valid for another node's name")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: ca.pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("usage %v: %v", usage, err)
		}
	}
	if life := time.Until(c.NotAfter); life < 29*24*time.Hour || life > 30*24*time.Hour || !c.NotAfter.Equal(notAfter) {
		t.Errorf("not after %s (returned %s), want 30 days from now", c.NotAfter, notAfter)
	}
	if c.IsCA {
		t.Error("a node certificate is a CA")
	}
}

func TestIssuerValidatesItsCAAndItsInput(t *testing.T) {
	a, b := newTestCA(t), newTestCA(t)
	if _, err := NewIssuer(a.ca.CertPEM, b.ca.KeyPEM, time.Hour, nil); err == nil || !strings.Contains(err.Error(), "--tls-ca-key") {
		t.Errorf("another CA's key: %v, want an error naming --tls-ca-key", err)
	}
	if _, err := NewIssuer(a.ca.CertPEM, a.ca.KeyPEM, 0, nil); err == nil || !strings.Contains(err.Error(), "--tls-cert-validity") {
		t.Errorf("zero validity: %v", err)
	}
	leaf, _, err := a.ca.Issue("n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewIssuer(leaf, a.ca.KeyPEM, time.Hour, nil); err == nil || !strings.Contains(err.Error(), "--tls-ca") {
		t.Errorf("a leaf as CA: %v", err)
	}
	iss := a.issuer(t, time.Hour, nil)
	if _, _, err := iss.Issue("Host-1", auth.NewNodeKey().Public()); err == nil {
		t.Error("an invalid node name was certified")
	}
	if _, _, err := iss.Issue("host-1", ed25519.PublicKey{1, 2, 3}); err == nil {
		t.Error("a short key was certified")
	}
	// Never beyond the CA's own validity.
	late := a.issuer(t, time.Hour, func() time.Time { return time.Now().Add(devca.CAValidity + 24*time.Hour) })
	if _, _, err := late.Issue("host-1", auth.NewNodeKey().Public()); err == nil {
		t.Error("a certificate was issued by an expired CA")
	}
}

func TestSourceTakesOnlyThisNodesCertificate(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	key := auth.NewNodeKey()
	dir := t.TempDir()
	src, err := NewSource(dir, "host-1", key, ca.pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	if src.Leaf() != nil {
		t.Fatal("a fresh source holds a certificate")
	}
	if _, err := src.ServerCertificate(); err == nil {
		t.Fatal("a server handshake without a certificate was given one")
	}
	if c, err := src.ClientCertificate(); err != nil || len(c.Certificate) != 0 {
		t.Fatalf("client side without a certificate: %v, %d certificates; want none sent", err, len(c.Certificate))
	}
	iss := ca.issuer(t, time.Hour, nil)
	mustIssue := func(iss *Issuer, name string, k ed25519.PublicKey) []byte {
		t.Helper()
		b, _, err := iss.Issue(name, k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	expired := ca.issuer(t, time.Hour, func() time.Time { return time.Now().Add(-2 * time.Hour) })
	devLeaf, _, _ := ca.ca.Issue("host-1") // a pre-made certificate, not issued for the node key
	for what, b := range map[string][]byte{
		"another node's":     mustIssue(iss, "host-2", key.Public()),
		"another key's":      mustIssue(iss, "host-1", auth.NewNodeKey().Public()),
		"another CA's":       mustIssue(other.issuer(t, time.Hour, nil), "host-1", key.Public()),
		"an expired":         mustIssue(expired, "host-1", key.Public()),
		"a dev (not issued)": devLeaf,
		"a chain of two":     append(mustIssue(iss, "host-1", key.Public()), ca.certPEM...),
		"a non-PEM":          []byte("not a certificate"),
	} {
		if err := src.Install(b); err == nil {
			t.Errorf("%s certificate was installed", what)
		}
	}
	if src.Leaf() != nil {
		t.Fatal("a refused certificate is held")
	}
	if _, err := os.Stat(filepath.Join(dir, CertFile)); !os.IsNotExist(err) {
		t.Fatalf("a refused certificate was written: %v", err)
	}

	good := mustIssue(iss, "host-1", key.Public())
	if err := src.Install(good); err != nil {
		t.Fatal(err)
	}
	c, err := src.ServerCertificate()
	if err != nil || c.Leaf.SerialNumber.Cmp(parsePEM(t, good).SerialNumber) != 0 {
		t.Fatalf("served certificate: %v", err)
	}
	// A restart finds it in the data directory.
	again, err := NewSource(dir, "host-1", key, ca.pool, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.Leaf() == nil || again.Leaf().SerialNumber.Cmp(c.Leaf.SerialNumber) != 0 {
		t.Fatal("the stored certificate was not loaded again")
	}
	// Once expired, the stored certificate is not taken: a new one is asked for.
	later, err := NewSource(dir, "host-1", key, ca.pool, func() time.Time { return time.Now().Add(2 * time.Hour) })
	if err != nil {
		t.Fatal(err)
	}
	if later.Leaf() != nil {
		t.Fatal("an expired stored certificate was taken")
	}
}
