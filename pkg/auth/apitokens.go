package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinAPITokenLen is the shortest operator token accepted.
const MinAPITokenLen = 16

// APITokens are the operator tokens from configuration. Only the SHA-256
// of each token is kept.
type APITokens struct {
	entries []apiToken
}

type apiToken struct {
	id   Identity
	hash [sha256.Size]byte
}

// ParseAPITokens reads operator tokens written as
//
//	name=token:scope,scope;name=token:scope
//
// Entries are separated by ';' or newlines; blank lines and lines starting
// with '#' are ignored. Scopes are read, write, admin (implies read and
// write) and filter. A token may not contain ':', ';' or whitespace, must
// be at least MinAPITokenLen characters and must not start with "hm1."
// (the session token format).
func ParseAPITokens(s string) (*APITokens, error) {
	t := &APITokens{}
	names := map[string]bool{}
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, entry := range strings.Split(line, ";") {
			entry = strings.TrimSpace(entry)
			if entry == "" {
				continue
			}
			e, err := parseAPIToken(entry)
			if err != nil {
				return nil, err
			}
			if names[e.id.Name] {
				return nil, fmt.Errorf("api token %q: name given twice", e.id.Name)
			}
			for _, o := range t.entries {
				if o.hash == e.hash {
					return nil, fmt.Errorf("api token %q: same token as %q", e.id.Name, o.id.Name)
				}
			}
			names[e.id.Name] = true
			t.entries = append(t.entries, e)
		}
	}
	return t, nil
}

func parseAPIToken(entry string) (apiToken, error) {
	name, rest, ok := strings.Cut(entry, "=")
	if !ok {
		return apiToken{}, errors.New("api token entry is not name=token:scopes")
	}
	name = strings.TrimSpace(name)
	if err := ValidateNodeName(name); err != nil {
		return apiToken{}, fmt.Errorf("api token name %q: %v", name, err)
	}
	tok, scopes, ok := strings.Cut(rest, ":")
	if !ok {
		return apiToken{}, fmt.Errorf("api token %q: no ':scopes' after the token", name)
	}
	switch {
	case len(tok) < MinAPITokenLen:
		return apiToken{}, fmt.Errorf("api token %q: %d characters, need at least %d", name, len(tok), MinAPITokenLen)
	case strings.ContainsAny(tok, " \t\r"):
		return apiToken{}, fmt.Errorf("api token %q: token contains whitespace", name)
	case IsSessionToken(tok):
		return apiToken{}, fmt.Errorf("api token %q: must not start with %q", name, tokenPrefix)
	}
	id := Identity{Name: name, Kind: KindOperator}
	for _, s := range strings.Split(scopes, ",") {
		sc, ok := parseScope(strings.TrimSpace(s))
		if !ok {
			return apiToken{}, fmt.Errorf("api token %q: unknown scope %q (want read, write, admin or filter)", name, s)
		}
		id.Scopes = append(id.Scopes, sc)
	}
	return apiToken{id: id, hash: sha256.Sum256([]byte(tok))}, nil
}

// LoadAPITokens parses value and the file at path (either may be empty)
// as one set.
func LoadAPITokens(value, path string) (*APITokens, error) {
	text := value
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read api tokens: %w", err)
		}
		text += "\n" + string(b)
	}
	t, err := ParseAPITokens(text)
	if err != nil {
		return nil, fmt.Errorf("--api-tokens: %w", err)
	}
	return t, nil
}

// Len is the number of tokens.
func (t *APITokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.entries)
}

// Lookup returns the identity of tok. Every entry is compared, in constant
// time, so the answer's timing says nothing about which entry matched.
func (t *APITokens) Lookup(tok string) (Identity, bool) {
	if t == nil {
		return Identity{}, false
	}
	h := sha256.Sum256([]byte(tok))
	var found Identity
	match := 0
	for _, e := range t.entries {
		if subtle.ConstantTimeCompare(h[:], e.hash[:]) == 1 {
			found, match = e.id, 1
		}
	}
	return found, match == 1
}

// GenerateAPIToken returns a new random operator token (256 bits,
// base64url, prefixed "hmo_" so it is recognisable in a leak scan).
func GenerateAPIToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "hmo_" + base64.RawURLEncoding.EncodeToString(b[:])
}
