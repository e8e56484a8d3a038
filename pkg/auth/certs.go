package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Certificates the control plane issues (package nodecert) name their node
// with a URI SAN, hivemind://node/<name>, and certify the node's own
// ed25519 identity key. Such a certificate is the node's identity on the
// wire: its DNS names only serve hostname checks.
const (
	nodeURIScheme = "hivemind"
	nodeURIHost   = "node"
)

// NodeURI is the URI SAN of a certificate issued to the node called name.
func NodeURI(name string) *url.URL {
	return &url.URL{Scheme: nodeURIScheme, Host: nodeURIHost, Path: "/" + name}
}

// IssuedTo reports whether c is a certificate the control plane issued to
// a node (it carries a hivemind node URI), and if so the node's name and
// the ed25519 key certified. A node URI with another kind of key, or more
// than one node URI, is issued to nobody (ok true, name ""): it is ours
// in form but cannot stand for a node.
func IssuedTo(c *x509.Certificate) (name string, key ed25519.PublicKey, ok bool) {
	var names []string
	for _, u := range c.URIs {
		if u.Scheme == nodeURIScheme && u.Host == nodeURIHost {
			names = append(names, strings.TrimPrefix(u.Path, "/"))
		}
	}
	if len(names) == 0 {
		return "", nil, false
	}
	k, isEd := c.PublicKey.(ed25519.PublicKey)
	if len(names) != 1 || !isEd || ValidateNodeName(names[0]) != nil {
		return "", nil, true
	}
	return names[0], k, true
}

// verifiedLeaf is the client certificate of the call's connection, when
// TLS verified one against the CA; nil otherwise.
func verifiedLeaf(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return ti.State.VerifiedChains[0][0]
}

// checkPeerCertificate refuses a node whose verified client certificate
// (mTLS) is not its own, so a token copied off one machine does not work
// from another machine's connection:
//   - an issued certificate must name the node and certify the key its
//     token proved;
//   - an operator-supplied certificate (no node URI) must name the node in
//     its common name or a DNS name;
//   - a token bound to a certificate at its handshake (Identity.CertBound)
//     is good only over a connection presenting that key's certificate.
//
// Other connections (plaintext, or an operator's CA-only TLS) are left to
// the token.
func checkPeerCertificate(ctx context.Context, id Identity) error {
	leaf := verifiedLeaf(ctx)
	if leaf == nil {
		if id.CertBound {
			return status.Errorf(codes.Unauthenticated, "node %s: its token is bound to its certificate; call over a connection presenting it", id.Name)
		}
		return nil
	}
	name, key, issued := IssuedTo(leaf)
	switch {
	case issued:
		if name != id.Name {
			return status.Errorf(codes.PermissionDenied, "node %s calls with a client certificate issued to %q: a node calls with its own certificate", id.Name, name)
		}
		if !SameKey(key, id.Key) {
			return status.Errorf(codes.PermissionDenied, "node %s calls with a client certificate for key %s, not the key %s it proved: a node calls with its own certificate", id.Name, fingerprint(key), fingerprint(id.Key))
		}
		return nil
	case id.CertBound:
		return status.Errorf(codes.Unauthenticated, "node %s: its token is bound to its issued certificate; call over a connection presenting it", id.Name)
	case leaf.Subject.CommonName == id.Name || leaf.VerifyHostname(id.Name) == nil:
		return nil
	}
	return status.Errorf(codes.PermissionDenied, "node %s calls with a client certificate for %q (names %v): a node calls with its own certificate", id.Name, leaf.Subject.CommonName, leaf.DNSNames)
}

// presentsIssuedCertificate reports whether the call's connection carries
// a certificate issued to id (its name and proven key).
func presentsIssuedCertificate(ctx context.Context, id Identity) bool {
	leaf := verifiedLeaf(ctx)
	if leaf == nil {
		return false
	}
	name, key, issued := IssuedTo(leaf)
	return issued && name == id.Name && SameKey(key, id.Key)
}
