package acl

import (
	"strings"
	"testing"
	"time"
)

func TestAllowed(t *testing.T) {
	teamA := &Policy{Name: "team-a", Rules: []Rule{
		{Resource: KV, Prefix: "/app/team-a/", Access: Write},
		{Resource: Events, Prefix: "/app/team-a/", Access: Read},
	}}
	split := &Policy{Name: "split", Rules: []Rule{
		{Resource: KV, Prefix: "/app/", Access: Write},
		{Resource: KV, Prefix: "/app/team-b/", Access: Deny},
		{Resource: KV, Prefix: "/app/team-b/public/", Access: Read},
	}}
	// Deny and allow on the same prefix, from two policies.
	denyOnTie := &Policy{Name: "deny-on-tie", Rules: []Rule{{Resource: KV, Prefix: "/app/", Access: Deny}}}
	readAll := Builtin("read")
	for _, tc := range []struct {
		name     string
		policies []*Policy
		res      Resource
		key      string
		want     Access
		allowed  bool
	}{
		{"prefix grants write", []*Policy{teamA}, KV, "/app/team-a/x", Write, true},
		{"write includes read", []*Policy{teamA}, KV, "/app/team-a/x", Read, true},
		{"the prefix itself", []*Policy{teamA}, KV, "/app/team-a/", Write, true},
		{"outside the prefix", []*Policy{teamA}, KV, "/app/team-b/x", Read, false},
		{"a prefix is not a path segment match", []*Policy{teamA}, KV, "/app/team-a", Read, false},
		{"read only gives no write", []*Policy{teamA}, Events, "/app/team-a/e", Write, false},
		{"another resource", []*Policy{teamA}, Intents, "/app/team-a/x", Read, false},
		{"no policy", nil, KV, "/x", Read, false},
		{"deny on a longer prefix", []*Policy{split}, KV, "/app/team-b/x", Read, false},
		{"deny leaves the rest", []*Policy{split}, KV, "/app/team-c/x", Write, true},
		{"allow below a deny", []*Policy{split}, KV, "/app/team-b/public/x", Read, true},
		{"allow below a deny is only read", []*Policy{split}, KV, "/app/team-b/public/x", Write, false},
		{"deny beats allow on the same prefix", []*Policy{split, denyOnTie}, KV, "/app/x", Read, false},
		{"longest prefix beats a shorter deny", []*Policy{denyOnTie, teamA}, KV, "/app/team-a/x", Write, true},
		{"builtin read everywhere", []*Policy{readAll}, KV, "/anything", Read, true},
		{"builtin read no write", []*Policy{readAll}, KV, "/anything", Write, false},
		{"builtin read not acl", []*Policy{readAll}, ACL, "", Read, false},
		{"builtin admin acl", []*Policy{Builtin("admin")}, ACL, "", Write, true},
		{"a resource without prefix ignores the key", []*Policy{Builtin("admin")}, Snapshot, "/whatever", Read, true},
		{"asking for deny is never allowed", []*Policy{Builtin("admin")}, KV, "/x", Deny, false},
	} {
		if got := Allowed(tc.policies, tc.res, tc.key, tc.want); got != tc.allowed {
			t.Errorf("%s: Allowed(%s %q %s) = %v, want %v", tc.name, tc.res, tc.key, tc.want, got, tc.allowed)
		}
	}
}

func TestAllowedUnder(t *testing.T) {
	split := &Policy{Name: "split", Rules: []Rule{
		{Resource: KV, Prefix: "/app/", Access: Write},
		{Resource: KV, Prefix: "/app/team-b/", Access: Deny},
		{Resource: KV, Prefix: "/app/team-a/ro/", Access: Read},
	}}
	for _, tc := range []struct {
		prefix string
		want   Access
		ok     bool
	}{
		{"/app/", Read, false},         // /app/team-b/ is denied inside
		{"/app/team-a/", Read, true},   // read-only below still reads
		{"/app/team-a/", Write, false}, // but not writes
		{"/app/team-c/", Write, true},
		{"/", Read, false}, // nothing given at /
	} {
		if got := AllowedUnder([]*Policy{split}, KV, tc.prefix, tc.want); got != tc.ok {
			t.Errorf("AllowedUnder(%q, %s) = %v, want %v", tc.prefix, tc.want, got, tc.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		p    Policy
		want string // "" when valid
	}{
		{Policy{Name: "team-a", Rules: []Rule{{Resource: KV, Prefix: "/app/", Access: Write}}}, ""},
		{Policy{Name: "", Rules: nil}, "name:"},
		{Policy{Name: "Team", Rules: nil}, "name:"},
		{Policy{Name: "ok", Rules: []Rule{{Resource: "kvv", Access: Read}}}, "rules[0].resource"},
		{Policy{Name: "ok", Rules: []Rule{{Resource: KV, Access: 0}}}, "rules[0].access"},
		{Policy{Name: "ok", Rules: []Rule{{Resource: KV, Access: Read}, {Resource: Snapshot, Prefix: "/x", Access: Read}}}, "rules[1].prefix"},
		{Policy{Name: "ok", Rules: []Rule{{Resource: KV, Prefix: strings.Repeat("x", MaxPrefix+1), Access: Read}}}, "rules[0].prefix"},
		{Policy{Name: "ok", Rules: make([]Rule, MaxRules+1)}, "rules:"},
	} {
		err := tc.p.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.p.Name, err)
		case tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)):
			t.Errorf("policy %q: error %v, want one starting %q", tc.p.Name, err, tc.want)
		}
	}
	for name, p := range builtins {
		if err := p.Validate(); err != nil {
			t.Errorf("builtin %s: %v", name, err)
		}
	}
}

func TestTokenSecretAndExpiry(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	tok := &Token{AccessorID: "a1", SecretHash: HashSecret("hmo_secret"), ExpiresAt: now.Add(time.Hour)}
	if !tok.Matches("hmo_secret") || tok.Matches("hmo_secreT") || tok.Matches("") {
		t.Error("Matches does not tell the secret from others")
	}
	if tok.Expired(now) || !tok.Expired(now.Add(time.Hour)) || !tok.Expired(now.Add(2*time.Hour)) {
		t.Error("Expired: before, at and after the expiry")
	}
	if (&Token{}).Expired(now.Add(100 * 365 * 24 * time.Hour)) {
		t.Error("a token without expiry expired")
	}
}
