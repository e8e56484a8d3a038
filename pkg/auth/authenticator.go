package auth

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Authenticator implements grpcserver.Authenticator: it finds the caller's
// bearer token, checks it against the method's rule in the Policy and puts
// the caller's Identity in the context.
type Authenticator struct {
	policy    *Policy
	tokens    *Tokens
	operators *APITokens
	members   *Directory
}

// NewAuthenticator checks session tokens with tokens and operator tokens
// with operators (nil: none) against policy. A node's token is good only
// while members still binds its name to its key (nil: not checked).
func NewAuthenticator(policy *Policy, tokens *Tokens, operators *APITokens, members *Directory) *Authenticator {
	return &Authenticator{policy: policy, tokens: tokens, operators: operators, members: members}
}

// Policy returns the policy, for roles to add rules to.
func (a *Authenticator) Policy() *Policy { return a.policy }

// Authenticate implements grpcserver.Authenticator.
func (a *Authenticator) Authenticate(ctx context.Context, fullMethod string) (context.Context, error) {
	req, ok := a.policy.Lookup(fullMethod)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s has no access rule; denied", fullMethod)
	}
	if req == Public {
		return ctx, nil
	}
	tok, err := bearer(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	id, err := a.identify(tok)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Kind == KindNode {
		if id.Joining && fullMethod != hivemindv1.Membership_Join_FullMethodName {
			// UNAUTHENTICATED, so the client handshakes again: after its
			// join it is bound and gets a member's token.
			return nil, status.Errorf(codes.Unauthenticated, "node %s is not a member yet: its credential admits it to Membership/Join only", id.Name)
		}
		if !id.Joining && a.members != nil {
			if err := a.members.checkMember(ctx, id); err != nil {
				return nil, err
			}
		}
		if err := checkPeerCertificate(ctx, id); err != nil {
			return nil, err
		}
	}
	if err := allowed(id, req, fullMethod); err != nil {
		return nil, err
	}
	return NewContext(ctx, id), nil
}

func (a *Authenticator) identify(tok string) (Identity, error) {
	if IsSessionToken(tok) {
		id, _, err := a.tokens.Verify(tok)
		return id, err
	}
	if id, ok := a.operators.Lookup(tok); ok {
		return id, nil
	}
	return Identity{}, errors.New("unknown api token")
}

func allowed(id Identity, req Requirement, fullMethod string) error {
	if req == NodeOnly {
		if id.Kind != KindNode {
			return status.Errorf(codes.PermissionDenied, "%s is for cluster nodes only; %s is an operator", fullMethod, id.Name)
		}
		return nil
	}
	if s := req.scope(); !id.Has(s) {
		return status.Errorf(codes.PermissionDenied, "%s needs the %q scope, which %s %s lacks", fullMethod, s, id.Kind, id.Name)
	}
	return nil
}

// bearer returns the token of the call's "authorization: bearer …".
func bearer(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch len(vals) {
	case 0:
		return "", errors.New(`no token: send "authorization: bearer <token>"`)
	case 1:
	default:
		return "", errors.New("more than one authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", errors.New(`authorization is not "bearer <token>"`)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return "", errors.New("empty bearer token")
	}
	return tok, nil
}

// Require returns PERMISSION_DENIED unless the caller in ctx has scope s.
// Handlers use it for capabilities that depend on the request, such as
// ScopeFilter for a subscription with a filter expression.
func Require(ctx context.Context, s Scope) error {
	id, ok := FromContext(ctx)
	if !ok {
		return status.Errorf(codes.PermissionDenied, "the %q scope is needed and the call has no identity", s)
	}
	if !id.Has(s) {
		return status.Errorf(codes.PermissionDenied, "the %q scope is needed, which %s %s lacks", s, id.Kind, id.Name)
	}
	return nil
}
