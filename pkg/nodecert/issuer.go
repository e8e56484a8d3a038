// Package nodecert issues, keeps and renews the X.509 certificates that
// carry a node's identity on the wire (mTLS), the way kubelet TLS
// bootstrap and Consul auto-encrypt do.
//
// A control-plane member given the CA key (Issuer) signs, for a node that
// asks (Service), a certificate for the node's own ed25519 identity key —
// the key its name is bound to in the member registry, never one the
// caller merely claims — naming the node in a URI SAN
// (hivemind://node/<name>, see auth.NodeURI) and a DNS SAN, valid for a
// bounded time, for server and client use. The node keeps it in its data
// directory beside node.key (Source), presents it on every new connection
// as server and client, and asks for a new one at two thirds of its
// lifetime and after every join (Renewer).
package nodecert

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
)

// DefaultValidity is how long an issued certificate is valid by default.
const DefaultValidity = 30 * 24 * time.Hour

// maxBackdate lets a certificate be used at once by a node whose clock is
// a little behind the issuer's. A short validity is backdated by a quarter
// of itself at most, so the renewal point (RenewAt) stays well before
// expiry.
const maxBackdate = time.Minute

// Issuer signs node certificates with a CA.
type Issuer struct {
	ca       *x509.Certificate
	caPEM    []byte
	key      crypto.Signer
	validity time.Duration
	now      func() time.Time
}

// LoadIssuer reads the CA certificate and its private key (PEM: PKCS#8,
// SEC 1 "EC PRIVATE KEY" as `make certs` writes, or PKCS#1 RSA).
func LoadIssuer(certFile, keyFile string, validity time.Duration) (*Issuer, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca-key: %w", err)
	}
	return NewIssuer(cb, kb, validity, nil)
}

// NewIssuer returns an issuer for the CA in caCertPEM and caKeyPEM whose
// certificates are valid for validity (at most until the CA expires). now
// is the clock; nil means time.Now.
func NewIssuer(caCertPEM, caKeyPEM []byte, validity time.Duration, now func() time.Time) (*Issuer, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("--tls-cert-validity: %s; must be positive", validity)
	}
	if now == nil {
		now = time.Now
	}
	cb, _ := pem.Decode(caCertPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("--tls-ca: no PEM CERTIFICATE block")
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("--tls-ca: the certificate is not a CA that may sign certificates")
	}
	key, err := parseSigner(caKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca-key: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(ca.PublicKey) {
		return nil, errors.New("--tls-ca-key: the key does not belong to the --tls-ca certificate")
	}
	return &Issuer{ca: ca, caPEM: pem.EncodeToMemory(cb), key: key, validity: validity, now: now}, nil
}

func parseSigner(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("a PEM %q block, want a private key", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("a %T cannot sign", k)
	}
	return s, nil
}

// CAPEM is the CA certificate, PEM.
func (i *Issuer) CAPEM() []byte { return i.caPEM }

// Issue signs a certificate for the node called name and its identity key.
// The caller has checked that the registry binds name to key. Besides the
// node's name, the certificate is valid for localhost and the loopback
// addresses, so the node's own healthcheck can verify it.
func (i *Issuer) Issue(name string, key ed25519.PublicKey) (certPEM []byte, notAfter time.Time, err error) {
	if err := auth.ValidateNodeName(name); err != nil {
		return nil, time.Time{}, fmt.Errorf("node name: %w", err)
	}
	if len(key) != ed25519.PublicKeySize {
		return nil, time.Time{}, fmt.Errorf("public key: %d bytes, want an ed25519 key of %d", len(key), ed25519.PublicKeySize)
	}
	now := i.now()
	notAfter = now.Add(i.validity).Truncate(time.Second)
	if notAfter.After(i.ca.NotAfter) {
		notAfter = i.ca.NotAfter
	}
	if !notAfter.After(now) {
		return nil, time.Time{}, fmt.Errorf("the CA expired at %s", i.ca.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, time.Time{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-min(maxBackdate, i.validity/4)),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		URIs:         []*url.URL{auth.NodeURI(name)},
	}
	if name != "localhost" {
		tmpl.DNSNames = append(tmpl.DNSNames, "localhost")
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.ca, key, i.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("sign certificate for %s: %w", name, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), notAfter, nil
}
