package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/hivemind/hivemind/pkg/auth"
)

func TestCaller(t *testing.T) {
	for _, tt := range []struct {
		name   string
		id     *auth.Identity
		key    string
		exempt bool
	}{
		{"public call", nil, "", false},
		{"host", &auth.Identity{Name: "h1", Kind: auth.KindNode, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}, Roles: []string{auth.RoleHost}}, "node h1", false},
		{"control-plane member", &auth.Identity{Name: "cp2", Kind: auth.KindNode, Roles: []string{auth.RoleControlPlane}}, "node cp2", true},
		{"read-only operator", &auth.Identity{Name: "ro", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeRead}}, "operator ro", false},
		{"write operator", &auth.Identity{Name: "ci", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeRead, auth.ScopeWrite}}, "operator ci", false},
		{"admin operator", &auth.Identity{Name: "ops", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeAdmin}}, "operator ops", true},
		{"a node and an operator of one name are two callers", &auth.Identity{Name: "h1", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeRead}}, "operator h1", false},
	} {
		ctx := context.Background()
		if tt.id != nil {
			ctx = auth.NewContext(ctx, *tt.id)
		}
		key, exempt, ok := Caller(ctx)
		if ok != (tt.id != nil) || key != tt.key || exempt != tt.exempt {
			t.Errorf("%s: got %q exempt=%v ok=%v, want %q exempt=%v", tt.name, key, exempt, ok, tt.key, tt.exempt)
		}
	}
}

func TestLimitFlagsValidate(t *testing.T) {
	good := LimitFlags{MaxRequestBytes: 4 << 20, RateLimit: DefaultRateLimit, RateBurst: DefaultRateBurst}
	if err := good.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tt := range []struct {
		f    LimitFlags
		want string
	}{
		{LimitFlags{MaxRequestBytes: 1000, RateLimit: 1, RateBurst: 1}, "--max-request-bytes: 1000 is less than the minimum 1048576"},
		{LimitFlags{MaxRequestBytes: 4 << 20, RateLimit: -1, RateBurst: 1}, "--rate-limit: -1 is negative"},
		{LimitFlags{MaxRequestBytes: 4 << 20, RateLimit: 10, RateBurst: 0}, "--rate-burst: 0 is less than 1"},
	} {
		if err := tt.f.validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.f, err, tt.want)
		}
	}
	off := LimitFlags{MaxRequestBytes: 4 << 20, RateLimit: 0, RateBurst: 0}
	if err := off.validate(); err != nil {
		t.Errorf("rate limit off: %v", err)
	}
}
