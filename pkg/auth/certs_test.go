package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// testCert makes a certificate (self-signed is enough here: the checks
// below see only what TLS verified) for pub with the given SANs.
func testCert(t *testing.T, cn string, dns []string, uris []*url.URL, pub any) *x509.Certificate {
	t.Helper()
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: dns, URIs: uris,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// overTLS is ctx as a call over a connection whose client certificate
// TLS verified (nil: a connection without one).
func overTLS(ctx context.Context, leaf *x509.Certificate) context.Context {
	st := tls.ConnectionState{}
	if leaf != nil {
		st.VerifiedChains = [][]*x509.Certificate{{leaf}}
	}
	return peer.NewContext(ctx, &peer.Peer{AuthInfo: credentials.TLSInfo{State: st}})
}

func issuedCert(t *testing.T, name string, key NodeKey) *x509.Certificate {
	return testCert(t, name, []string{name}, []*url.URL{NodeURI(name)}, ed25519.PublicKey(key.Public()))
}

func TestIssuedToReadsTheNodeURIAndKey(t *testing.T) {
	k := NewNodeKey()
	name, key, issued := IssuedTo(issuedCert(t, "host-1", k))
	if !issued || name != "host-1" || !SameKey(key, k.Public()) {
		t.Fatalf("issued %v to %q", issued, name)
	}
	if _, _, issued := IssuedTo(testCert(t, "host-1", []string{"host-1"}, nil, ed25519.PublicKey(k.Public()))); issued {
		t.Error("a certificate without a node URI counts as issued")
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for what, c := range map[string]*x509.Certificate{
		"a node URI with a P-256 key": testCert(t, "host-1", nil, []*url.URL{NodeURI("host-1")}, &ec.PublicKey),
		"two node URIs":               testCert(t, "host-1", nil, []*url.URL{NodeURI("host-1"), NodeURI("host-2")}, ed25519.PublicKey(k.Public())),
		"an invalid name":             testCert(t, "x", nil, []*url.URL{NodeURI("Host-1")}, ed25519.PublicKey(k.Public())),
	} {
		if name, _, issued := IssuedTo(c); !issued || name != "" {
			t.Errorf("%s: issued %v to %q, want ours in form but to nobody", what, issued, name)
		}
	}
}

// A token issued over a connection presenting the node's issued
// certificate is good only over connections presenting that key's
// certificate; issued certificates must name the caller and its key.
func TestTokensAreBoundToTheIssuedCertificate(t *testing.T) {
	s := NewServer(ServerConfig{Name: "srv", Members: testMembers, Secret: mustSecret(t, testSecretA)})
	members := NewDirectory()
	members.Set(testMembers)
	authn := NewAuthenticator(NewPolicy(), s.Tokens(), nil, members)
	own := issuedCert(t, "host-1", testKey)
	handshake := func(leaf *x509.Certificate) (string, error) {
		c := newClientSide(t, "host-1", testSecretA)
		resp, err := s.Authenticate(overTLS(context.Background(), leaf), c.request(c.challenge(t, s)))
		return resp.GetToken(), err
	}
	call := func(tok string, leaf *x509.Certificate) error {
		_, err := authn.Authenticate(overTLS(withIncomingBearer(tok), leaf), hivemindv1.Node_Info_FullMethodName)
		return err
	}

	bound, err := handshake(own)
	if err != nil {
		t.Fatal(err)
	}
	if id, _, _ := s.Tokens().Verify(bound); !id.CertBound {
		t.Fatal("a token issued over the node's certificate is not bound to it")
	}
	if err := call(bound, own); err != nil {
		t.Fatalf("bound token with its certificate: %v", err)
	}
	// A renewed certificate certifies the same key: still good.
	if err := call(bound, issuedCert(t, "host-1", testKey)); err != nil {
		t.Fatalf("bound token with a renewed certificate: %v", err)
	}
	wantCode(t, call(bound, nil), codes.Unauthenticated, "bound to its certificate")
	wantCode(t, call(bound, testCert(t, "host-1", []string{"host-1"}, nil, ed25519.PublicKey(testKey.Public()))), codes.Unauthenticated, "bound to its issued certificate")
	wantCode(t, call(bound, issuedCert(t, "host-2", NewNodeKey())), codes.PermissionDenied, `issued to "host-2"`)
	wantCode(t, call(bound, issuedCert(t, "host-1", NewNodeKey())), codes.PermissionDenied, "not the key")

	// Over a connection without a certificate (before the node has one),
	// the token is not bound, and a copied token still meets the checks
	// of any certificate that comes with it.
	free, err := handshake(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(free, nil); err != nil {
		t.Fatalf("unbound token without a certificate: %v", err)
	}
	wantCode(t, call(free, issuedCert(t, "host-2", NewNodeKey())), codes.PermissionDenied, "own certificate")

	// A handshake over another node's certificate, or a certificate for
	// another key, is refused at once.
	if _, err := handshake(issuedCert(t, "host-2", NewNodeKey())); err == nil {
		t.Error("handshake over another node's certificate succeeded")
	} else {
		wantCode(t, err, codes.PermissionDenied, "host-2")
	}
	if _, err := handshake(issuedCert(t, "host-1", NewNodeKey())); err == nil {
		t.Error("handshake over a certificate for another key succeeded")
	}
}

// With mTLS, a control-plane peer of the raft configuration that has not
// joined the registry (bound without a key) is admitted only with a
// certificate naming it, not on the secret alone.
func TestUnjoinedPeerNeedsItsCertificateWithMTLS(t *testing.T) {
	members := StaticMembers{"cp2": {Roles: []string{RoleControlPlane}}}
	handshake := func(s *Server, leaf *x509.Certificate, key NodeKey) error {
		c := newClientSide(t, "cp2", testSecretA)
		c.key = key
		_, err := s.Authenticate(overTLS(context.Background(), leaf), c.request(c.challenge(t, s)))
		return err
	}
	key := NewNodeKey()
	plain := NewServer(ServerConfig{Name: "srv", Members: members, Secret: mustSecret(t, testSecretA)})
	if err := handshake(plain, nil, key); err != nil {
		t.Fatalf("without mTLS the secret admits the peer (the documented window): %v", err)
	}
	s := NewServer(ServerConfig{Name: "srv", Members: members, Secret: mustSecret(t, testSecretA), PeerCertificates: true})
	if err := handshake(s, nil, key); err == nil {
		t.Fatal("with mTLS, the secret alone admitted an unjoined peer")
	} else {
		wantCode(t, err, codes.PermissionDenied, "certificate")
	}
	if err := handshake(s, issuedCert(t, "cp3", key), key); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another peer's certificate: %v", err)
	}
	if err := handshake(s, issuedCert(t, "cp2", key), key); err != nil {
		t.Fatalf("its own issued certificate: %v", err)
	}
	if err := handshake(s, testCert(t, "cp2", []string{"cp2"}, nil, ed25519.PublicKey(key.Public())), key); err != nil {
		t.Fatalf("an operator-supplied certificate naming it: %v", err)
	}
}
