package devca

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

func TestIssuedCertificatesVerifyForEveryName(t *testing.T) {
	dir := t.TempDir()
	if err := WriteDir(dir, []string{"controlplane-1", "host-1"}); err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem is not PEM")
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, "controlplane-1.pem"))
	b, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"controlplane-1", "localhost", "127.0.0.1"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s usage %v: %v", name, usage, err)
			}
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "host-1", Roots: roots}); err == nil {
		t.Error("controlplane-1's certificate verifies for host-1")
	}
	if st, _ := os.Stat(filepath.Join(dir, "host-1-key.pem")); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode().Perm())
	}

	// A second run keeps the CA, so certificates already issued stay valid.
	if err := WriteDir(dir, []string{"dns-1"}); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if string(again) != string(caPEM) {
		t.Fatal("the CA was replaced")
	}
}
