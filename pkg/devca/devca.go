// Package devca makes a development certificate authority and node
// certificates for a local or docker-compose hivemind cluster. It is for
// development and tests only: keys are written unencrypted and the CA
// lives beside the certificates.
package devca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hivemind/hivemind/pkg/atomicfile"
)

// Validity of what New and Issue make.
const (
	CAValidity   = 5 * 365 * 24 * time.Hour
	CertValidity = 365 * 24 * time.Hour
)

// CA signs node certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertPEM and KeyPEM are the CA's certificate and key.
	CertPEM, KeyPEM []byte
}

// New makes a self-signed CA.
func New(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"hivemind dev"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return parse(pemBlock("CERTIFICATE", der), keyPEM(key))
}

// Parse loads a CA from its PEM certificate and key.
func Parse(certPEM, keyPEM []byte) (*CA, error) { return parse(certPEM, keyPEM) }

func parse(certPEM, kPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(kPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("devca: CA certificate or key is not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: CA certificate: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devca: CA key: %w", err)
	}
	return &CA{cert: cert, key: key, CertPEM: certPEM, KeyPEM: kPEM}, nil
}

// Issue makes a certificate for names (DNS names or IP addresses), valid
// both as a server and as a client certificate, since roles use theirs
// both ways (mTLS). "localhost" and 127.0.0.1 are always included, so the
// healthcheck and operators on the same machine can verify it. The first
// name is the common name.
func (ca *CA) Issue(names ...string) (certPEM, keyPEMOut []byte, err error) {
	if len(names) == 0 {
		return nil, nil, errors.New("devca: a certificate needs a name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"hivemind dev"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	seen := map[string]bool{}
	for _, n := range append(names, "localhost", "127.0.0.1", "::1") {
		if seen[n] {
			continue
		}
		seen[n] = true
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), keyPEM(key), nil
}

// WriteDir writes, under dir, ca.pem and ca-key.pem (kept when they exist,
// so certificates already handed out stay valid) and <name>.pem and
// <name>-key.pem for each node name. Keys are written mode 0600.
func WriteDir(dir string, nodes []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	var ca *CA
	cb, cerr := os.ReadFile(caCert)
	kb, kerr := os.ReadFile(caKey)
	switch {
	case cerr == nil && kerr == nil:
		var err error
		if ca, err = Parse(cb, kb); err != nil {
			return err
		}
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
		var err error
		if ca, err = New("hivemind dev CA"); err != nil {
			return err
		}
		if err := write(caKey, ca.KeyPEM, 0o600); err != nil {
			return err
		}
		if err := write(caCert, ca.CertPEM, 0o644); err != nil {
			return err
		}
	default:
		return fmt.Errorf("devca: %s: need both ca.pem and ca-key.pem, or neither", dir)
	}
	for _, n := range nodes {
		c, k, err := ca.Issue(n)
		if err != nil {
			return fmt.Errorf("devca: %s: %w", n, err)
		}
		if err := write(filepath.Join(dir, n+"-key.pem"), k, 0o600); err != nil {
			return err
		}
		if err := write(filepath.Join(dir, n+".pem"), c, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// write replaces path atomically: a key or certificate is never left
// half written.
func write(path string, b []byte, mode os.FileMode) error {
	return atomicfile.Write(path, b, mode)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(fmt.Sprintf("devca: marshal P-256 key: %v", err)) // cannot fail for P-256
	}
	return pemBlock("EC PRIVATE KEY", der)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("devca: serial: %v", err))
	}
	return n
}
