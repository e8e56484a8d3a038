// Package secret holds the cluster secret and derives the keys every part
// of hivemind uses from it: session-token signing, handshake proofs, gossip
// encryption and admission tickets. The secret itself is never sent; each
// use gets its own key (HKDF-SHA256 with a purpose label), so a key that
// leaks from one use says nothing about the others.
package secret

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
)

// MinLength is the shortest secret accepted, in bytes.
const MinLength = 16

// Purposes of derived keys. Each is a distinct HKDF info label.
const (
	PurposeHandshake = "hivemind handshake v1"
	PurposeToken     = "hivemind session token v1"
	PurposeGossip    = "hivemind gossip v1"
)

// Secret is the cluster secret. The zero value is invalid.
type Secret struct {
	raw []byte
}

// ErrTooShort is returned for a secret shorter than MinLength.
var ErrTooShort = errors.New("cluster secret too short")

// New wraps raw bytes as a Secret.
func New(raw []byte) (Secret, error) {
	if len(raw) < MinLength {
		return Secret{}, fmt.Errorf("%w: %d bytes, need at least %d", ErrTooShort, len(raw), MinLength)
	}
	return Secret{raw: append([]byte(nil), raw...)}, nil
}

// Load returns the secret from value, or from the file at path when value
// is empty. Surrounding whitespace in the file is ignored.
func Load(value, path string) (Secret, error) {
	if value == "" && path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Secret{}, fmt.Errorf("read cluster secret: %w", err)
		}
		value = strings.TrimSpace(string(b))
	}
	if value == "" {
		return Secret{}, errors.New("no cluster secret: set --cluster-secret or --cluster-secret-file")
	}
	return New([]byte(value))
}

// Valid reports whether s holds a secret.
func (s Secret) Valid() bool { return len(s.raw) >= MinLength }

// Key derives a 32-byte key for purpose.
func (s Secret) Key(purpose string) []byte {
	if !s.Valid() {
		panic("secret: Key on an invalid secret")
	}
	k, err := hkdf.Key(sha256.New, s.raw, nil, purpose, 32)
	if err != nil {
		panic(fmt.Sprintf("secret: hkdf: %v", err)) // only for lengths > 255*32
	}
	return k
}

// String never shows the secret.
func (s Secret) String() string { return "[cluster secret]" }

// GoString never shows the secret.
func (s Secret) GoString() string { return "secret.Secret{[redacted]}" }
