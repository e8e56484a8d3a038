package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestTokenRoundTripExpiryTamperAndOtherSecret(t *testing.T) {
	clk := newClock()
	a := NewTokens(clk.Now)
	id := Identity{Name: "ops", Kind: KindOperator, Scopes: []Scope{ScopeRead, ScopeFilter}}
	tok, exp := a.Issue(id, time.Minute)
	if !IsSessionToken(tok) || strings.Count(tok, ".") != 2 {
		t.Fatalf("token %q is not hm1.<payload>.<mac>", tok)
	}
	got, gotExp, err := a.Verify(tok)
	if err != nil || got.String() != id.String() || !gotExp.Equal(exp) {
		t.Fatalf("verify: %v %v %v", got, gotExp, err)
	}

	if _, _, err := NewTokens(clk.Now).Verify(tok); !errors.Is(err, ErrTokenSignature) {
		t.Fatalf("other secret: %v, want ErrTokenSignature", err)
	}
	for i := len(tokenPrefix); i < len(tok); i++ {
		if tok[i] == '.' {
			continue
		}
		b := []byte(tok)
		b[i] ^= 0x01
		if _, _, err := a.Verify(string(b)); err == nil {
			t.Fatalf("token altered at byte %d verified", i)
		}
	}
	for _, bad := range []string{"", "hm1.", "hm1..", "hm1.x", "hm2." + tok[4:], tok + ".x"} {
		if _, _, err := a.Verify(bad); err == nil {
			t.Fatalf("%q verified", bad)
		}
	}

	clk.Add(time.Minute - time.Second)
	if _, _, err := a.Verify(tok); err != nil {
		t.Fatalf("a second before expiry: %v", err)
	}
	clk.Add(time.Second)
	if _, _, err := a.Verify(tok); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("at expiry: %v, want ErrTokenExpired", err)
	}
}

func TestAPITokensScopesAndParsing(t *testing.T) {
	ops, ro, filt := GenerateAPIToken(), GenerateAPIToken(), GenerateAPIToken()
	if ops == ro || len(ops) < MinAPITokenLen {
		t.Fatal("generated tokens are not random or too short")
	}
	toks, err := ParseAPITokens("ops=" + ops + ":read,write,admin,filter; ro=" + ro + ":read\n# comment\nfilt=" + filt + ":filter\n")
	if err != nil {
		t.Fatal(err)
	}
	if toks.Len() != 3 {
		t.Fatalf("%d tokens", toks.Len())
	}
	for _, tc := range []struct {
		tok         string
		name        string
		has, hasNot []Scope
	}{
		{ops, "ops", []Scope{ScopeRead, ScopeWrite, ScopeAdmin, ScopeFilter}, nil},
		{ro, "ro", []Scope{ScopeRead}, []Scope{ScopeWrite, ScopeAdmin, ScopeFilter}},
		{filt, "filt", []Scope{ScopeFilter}, []Scope{ScopeRead, ScopeWrite, ScopeAdmin}},
	} {
		id, ok := toks.Lookup(tc.tok)
		if !ok || id.Name != tc.name || id.Kind != KindOperator {
			t.Fatalf("lookup %s: %v %v", tc.name, id, ok)
		}
		for _, s := range tc.has {
			if !id.Has(s) {
				t.Errorf("%s lacks %s", tc.name, s)
			}
		}
		for _, s := range tc.hasNot {
			if id.Has(s) {
				t.Errorf("%s has %s", tc.name, s)
			}
		}
	}
	// Admin implies read and write, not filter.
	admin := Identity{Kind: KindOperator, Scopes: []Scope{ScopeAdmin}}
	if !admin.Has(ScopeRead) || !admin.Has(ScopeWrite) || admin.Has(ScopeFilter) {
		t.Fatal("admin implies read and write only")
	}
	if _, ok := toks.Lookup(ops + "x"); ok {
		t.Fatal("unknown token found")
	}
	var none *APITokens
	if _, ok := none.Lookup(ops); ok {
		t.Fatal("nil set found a token")
	}

	for _, bad := range []string{
		"ops",                       // no '='
		"ops=" + ops,                // no scopes
		"ops=" + ops + ":",          // empty scope
		"ops=" + ops + ":read,root", // unknown scope
		"ops=short:read",            // too short
		"a/b=" + ops + ":read",      // bad name
		"ops=" + ops + ":read;ops=" + ro + ":read", // name twice
		"a=" + ops + ":read;b=" + ops + ":read",    // token twice
		"ops=hm1.aaaaaaaaaaaaaaaaaaaa:read",        // session token format
	} {
		if _, err := ParseAPITokens(bad); err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), ops) || strings.Contains(err.Error(), ro) {
			t.Errorf("error for %q shows the token: %v", bad, err)
		}
	}
	if toks, err := ParseAPITokens(""); err != nil || toks.Len() != 0 {
		t.Fatalf("empty config: %v %v", toks, err)
	}
}
