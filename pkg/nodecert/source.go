package nodecert

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hivemind/hivemind/pkg/atomicfile"
	"github.com/hivemind/hivemind/pkg/auth"
)

// CertFile is the name of a node's issued certificate in its data
// directory, beside auth.NodeKeyFile, whose key it certifies.
const CertFile = "node.crt"

// ErrNoCertificate is what a server handshake gets before the node holds
// a certificate.
var ErrNoCertificate = errors.New("this node has no certificate yet: it gets one from the control plane after its join")

// Source is a node's current issued certificate, changed at run time:
// tlsconfig presents whatever it holds on each new connection, so a
// renewed certificate is used without a restart and connections already
// open keep theirs.
type Source struct {
	name  string
	key   auth.NodeKey
	roots *x509.CertPool
	path  string
	now   func() time.Time
	cur   atomic.Pointer[held]
}

type held struct {
	tls  *tls.Certificate
	leaf *x509.Certificate
}

// NewSource returns the source of the node called name with key, whose
// certificates must chain to roots, kept in dir/node.crt. A certificate
// already there is taken when it is still good for this node (an expired
// one, one from another CA or for another name or key is ignored, and a
// new one asked for). now is the clock; nil means time.Now.
func NewSource(dir, name string, key auth.NodeKey, roots *x509.CertPool, now func() time.Time) (*Source, error) {
	if !key.Valid() {
		return nil, errors.New("nodecert: the node key is needed")
	}
	if roots == nil {
		return nil, errors.New("nodecert: the CA that signs node certificates is needed (--tls-ca)")
	}
	if now == nil {
		now = time.Now
	}
	s := &Source{name: name, key: key, roots: roots, path: filepath.Join(dir, CertFile), now: now}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("nodecert: %w", err)
	default:
		if h, err := s.check(b); err == nil {
			s.cur.Store(h)
		}
	}
	return s, nil
}

// Leaf returns the certificate held, nil when there is none.
func (s *Source) Leaf() *x509.Certificate {
	if h := s.cur.Load(); h != nil {
		return h.leaf
	}
	return nil
}

// Install checks certPEM (this node's name and key, signed by the CA, valid
// now), writes it atomically to the data directory and presents it from
// then on. A certificate that fails a check changes nothing.
func (s *Source) Install(certPEM []byte) error {
	h, err := s.check(certPEM)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.path, certPEM, 0o644); err != nil {
		return fmt.Errorf("nodecert: store certificate: %w", err)
	}
	s.cur.Store(h)
	return nil
}

func (s *Source) check(certPEM []byte) (*held, error) {
	blk, rest := pem.Decode(certPEM)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("nodecert: certificate: no PEM CERTIFICATE block")
	}
	if b, _ := pem.Decode(rest); b != nil {
		// Node certificates are signed by the CA directly: a leaf only.
		return nil, errors.New("nodecert: certificate: more than one PEM block")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("nodecert: certificate: %w", err)
	}
	name, key, issued := auth.IssuedTo(leaf)
	switch {
	case !issued || name == "":
		return nil, errors.New("nodecert: certificate: not a node certificate (no hivemind node URI with an ed25519 key)")
	case name != s.name:
		return nil, fmt.Errorf("nodecert: certificate: issued to %q, this node is %q", name, s.name)
	case !auth.SameKey(key, ed25519.PublicKey(s.key.Public())):
		return nil, errors.New("nodecert: certificate: certifies another key than this node's node.key")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: s.roots, CurrentTime: s.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("nodecert: certificate: %w", err)
	}
	return &held{
		tls:  &tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: s.key.Signer(), Leaf: leaf},
		leaf: leaf,
	}, nil
}

// ServerCertificate is the certificate a server presents; an error before
// the node holds one, which fails the handshake.
func (s *Source) ServerCertificate() (*tls.Certificate, error) {
	if h := s.cur.Load(); h != nil {
		return h.tls, nil
	}
	return nil, ErrNoCertificate
}

// ClientCertificate is the certificate a client presents: none before the
// node holds one (servers accept clients without a certificate, and the
// node's token then carries its identity alone).
func (s *Source) ClientCertificate() (*tls.Certificate, error) {
	if h := s.cur.Load(); h != nil {
		return h.tls, nil
	}
	return &tls.Certificate{}, nil
}
