package ticket

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

func newKey(t *testing.T) (ed25519.PublicKey, func([]byte) []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, func(m []byte) []byte { return ed25519.Sign(priv, m) }
}

func TestSignVerify(t *testing.T) {
	pub, sign := newKey(t)
	otherPub, otherSign := newKey(t)
	keys := Keys(map[string]ed25519.PublicKey{"cp1": pub, "cp2": otherPub})
	in := Ticket{Name: "host-a", Issuer: "cp1", Epoch: 3, Incarnation: 9, Revision: 42, IssuedAt: time.Unix(1700000000, 5)}
	raw, err := Sign(sign, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(raw, keys, "host-a", 3)
	if err != nil {
		t.Fatal(err)
	}
	if got != in && (got.Name != in.Name || got.Issuer != in.Issuer || got.Epoch != in.Epoch || got.Incarnation != in.Incarnation || got.Revision != in.Revision || !got.IssuedAt.Equal(in.IssuedAt)) {
		t.Fatalf("round trip: got %+v, want %+v", got, in)
	}
	// Signed by cp2's key but naming cp1 as issuer: a member cannot issue
	// in another's name.
	impostor, err := Sign(otherSign, in)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by someone with a key no control-plane member has.
	_, strangerSign := newKey(t)
	stranger, err := Sign(strangerSign, Ticket{Name: "host-a", Issuer: "evil", Epoch: 3})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name  string
		raw   []byte
		node  string
		epoch uint64
		want  error
	}{
		{"another member's key under cp1's name", impostor, "host-a", 3, ErrSignature},
		{"an issuer that is not a member", stranger, "host-a", 3, ErrIssuer},
		{"other node", raw, "host-b", 3, ErrName},
		{"other epoch", raw, "host-a", 4, ErrEpoch},
		{"truncated", raw[:len(raw)-1], "host-a", 3, ErrMalformed},
		{"empty", nil, "host-a", 3, ErrMalformed},
		{"flipped bit in the body", flip(raw, len(raw)-sigLen-3), "host-a", 3, ErrSignature},
		{"flipped bit in the signature", flip(raw, len(raw)-1), "host-a", 3, ErrSignature},
	}
	for _, c := range cases {
		if _, err := Verify(c.raw, keys, c.node, c.epoch); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestSignRejectsBadNames(t *testing.T) {
	_, sign := newKey(t)
	long := string(bytes.Repeat([]byte{'a'}, MaxNameLength+1))
	for _, tk := range []Ticket{{Name: "", Issuer: "cp1"}, {Name: long, Issuer: "cp1"}, {Name: "a", Issuer: ""}, {Name: "a", Issuer: long[:MaxIssuerLength+1]}} {
		if _, err := Sign(sign, tk); !errors.Is(err, ErrMalformed) {
			t.Errorf("Sign(%d-byte name, %d-byte issuer) = %v, want ErrMalformed", len(tk.Name), len(tk.Issuer), err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}
