package nodecert

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Service implements hivemindv1.CertificatesServer on a control-plane
// member that holds the CA key.
type Service struct {
	hivemindv1.UnimplementedCertificatesServer
	// NodeName is this member (issued_by).
	NodeName string
	Issuer   *Issuer
	// Members is the registry the caller's key is taken from: the
	// member's own replica.
	Members auth.Members
}

// IssueNodeCertificate implements hivemindv1.CertificatesServer. The name
// is the caller's, from its credential; the key is the one the registry
// binds to that name, which the caller proved in its handshake. So a node
// gets a certificate for itself only, and only for its bound key.
func (s *Service) IssueNodeCertificate(ctx context.Context, _ *hivemindv1.IssueNodeCertificateRequest) (*hivemindv1.IssueNodeCertificateResponse, error) {
	id, ok := auth.FromContext(ctx)
	if !ok || id.Kind != auth.KindNode {
		return nil, status.Error(codes.PermissionDenied, "certificates are issued to cluster nodes, for themselves")
	}
	if id.Joining {
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not a member yet: it gets a certificate after its join", id.Name)
	}
	b, bound, err := s.Members.Binding(ctx, id.Name)
	switch {
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "looking up %s in the member registry: %v", id.Name, err)
	case !bound:
		return nil, status.Errorf(codes.PermissionDenied, "node %s is not a member (left or removed)", id.Name)
	case b.PublicKey == nil:
		// An --initial-cluster peer before its own join: no key is bound
		// yet, and a certificate certifies only a bound key.
		return nil, status.Errorf(codes.FailedPrecondition, "node %s has no key bound in the registry yet; it gets a certificate after its join", id.Name)
	case !auth.SameKey(b.PublicKey, id.Key):
		return nil, status.Errorf(codes.PermissionDenied, "node %s is bound to another key than the one its credential proved; authenticate again", id.Name)
	}
	certPEM, notAfter, err := s.Issuer.Issue(id.Name, b.PublicKey)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "issue certificate for %s: %v", id.Name, err)
	}
	return &hivemindv1.IssueNodeCertificateResponse{
		CertificatePem: certPEM, NotAfter: timestamppb.New(notAfter), IssuedBy: s.NodeName,
	}, nil
}
