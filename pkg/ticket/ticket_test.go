package ticket

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	in := Ticket{Name: "host-a", Epoch: 3, Incarnation: 9, Revision: 42, IssuedAt: time.Unix(1700000000, 5)}
	raw, err := Sign(key, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Verify(key, raw, "host-a", 3)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != in.Name || got.Epoch != in.Epoch || got.Incarnation != in.Incarnation || got.Revision != in.Revision || !got.IssuedAt.Equal(in.IssuedAt) {
		t.Fatalf("round trip: got %+v, want %+v", got, in)
	}

	cases := []struct {
		name  string
		key   []byte
		raw   []byte
		node  string
		epoch uint64
		want  error
	}{
		{"wrong key", bytes.Repeat([]byte{8}, 32), raw, "host-a", 3, ErrSignature},
		{"other node", key, raw, "host-b", 3, ErrName},
		{"other epoch", key, raw, "host-a", 4, ErrEpoch},
		{"truncated", key, raw[:len(raw)-1], "host-a", 3, ErrMalformed},
		{"empty", key, nil, "host-a", 3, ErrMalformed},
		{"flipped bit", key, flip(raw, 5), "host-a", 3, ErrSignature},
	}
	for _, c := range cases {
		if _, err := Verify(c.key, c.raw, c.node, c.epoch); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestSignRejectsBadNames(t *testing.T) {
	key := make([]byte, 32)
	for _, n := range []string{"", string(bytes.Repeat([]byte{'a'}, MaxNameLength+1))} {
		if _, err := Sign(key, Ticket{Name: n}); !errors.Is(err, ErrMalformed) {
			t.Errorf("Sign(%d-byte name) = %v, want ErrMalformed", len(n), err)
		}
	}
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

func FuzzParse(f *testing.F) {
	key := make([]byte, 32)
	raw, _ := Sign(key, Ticket{Name: "n", Epoch: 1})
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := Parse(key, b)
		if err != nil {
			return
		}
		again, err := Sign(key, tk)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("a ticket that parses must re-sign to the same bytes")
		}
	})
}
