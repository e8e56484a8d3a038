package egress

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	allowLAN := Policy{Allow: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}
	for _, tc := range []struct {
		policy Policy
		addr   string
		ok     bool
	}{
		{Policy{}, "93.184.216.34", true},
		{Policy{}, "2606:2800:220:1:248:1893:25c8:1946", true},
		{Policy{}, "127.0.0.1", false},
		{Policy{}, "127.8.9.10", false},
		{Policy{}, "::1", false},
		{Policy{}, "::ffff:127.0.0.1", false},  // IPv4-mapped
		{Policy{}, "64:ff9b::7f00:1", false},   // NAT64 of 127.0.0.1
		{Policy{}, "64:ff9b::5db8:d822", true}, // NAT64 of a public address
		{Policy{}, "10.0.0.1", false},
		{Policy{}, "172.16.5.4", false},
		{Policy{}, "172.32.0.1", true},
		{Policy{}, "192.168.1.1", false},
		{Policy{}, "fd12:3456::1", false},
		{Policy{}, "169.254.169.254", false}, // cloud metadata
		{Policy{}, "fe80::1", false},
		{Policy{}, "0.0.0.0", false},
		{Policy{}, "::", false},
		{Policy{}, "224.0.0.1", false},
		{Policy{}, "ff02::1", false},
		{Policy{}, "100.64.0.1", false},
		{Policy{}, "100.128.0.1", true},
		{Policy{}, "255.255.255.255", false},
		{Policy{AllowLoopback: true}, "127.0.0.1", true},
		{Policy{AllowLoopback: true}, "::1", true},
		{Policy{AllowLoopback: true}, "10.0.0.1", false},
		{allowLAN, "10.1.2.3", true},
		{allowLAN, "10.2.2.3", false},
		{allowLAN, "127.0.0.1", false},
	} {
		err := tc.policy.Check(netip.MustParseAddr(tc.addr))
		if (err == nil) != tc.ok {
			t.Errorf("%+v.Check(%s) = %v, want allowed=%v", tc.policy, tc.addr, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrForbidden) {
			t.Errorf("error %v does not wrap ErrForbidden", err)
		}
	}
}

// TestDialerChecksResolvedAddress dials a name that resolves to loopback:
// the refusal must come from the address dialled, not from the name.
func TestDialerChecksResolvedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if _, err := (Policy{}).Dialer().DialContext(ctx, "tcp4", net.JoinHostPort("localhost", port)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("dial localhost without allowance: %v, want ErrForbidden", err)
	}
	c, err := (Policy{AllowLoopback: true}).Dialer().DialContext(ctx, "tcp4", net.JoinHostPort("localhost", port))
	if err != nil {
		t.Fatalf("dial localhost with loopback allowed: %v", err)
	}
	c.Close()
}

func TestParseAllow(t *testing.T) {
	got, err := ParseAllow([]string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", " "})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("got[%d] = %v, want %s", i, got[i], want[i])
		}
	}
	if _, err := ParseAllow([]string{"10.0.0.0/33"}); err == nil {
		t.Error("bad prefix accepted")
	}
}
