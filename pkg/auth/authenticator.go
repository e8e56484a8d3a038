package auth

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Authenticator implements grpcserver.Authenticator: it finds the caller's
// bearer token, checks it against the method's rule in the Policy and puts
// the caller's Identity in the context.
type Authenticator struct {
	policy    *Policy
	tokens    *Tokens
	operators *APITokens
}

// NewAuthenticator checks session tokens with tokens and operator tokens
// with operators (nil: none) against policy.
func NewAuthenticator(policy *Policy, tokens *Tokens, operators *APITokens) *Authenticator {
	return &Authenticator{policy: policy, tokens: tokens, operators: operators}
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
