package dnsnode

import (
	"errors"
	"testing"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

// Pages read at different revisions: an event is skipped exactly when the
// page holding its key already reflects it.
func TestPagesCovered(t *testing.T) {
	p := &pages{newest: 12, spans: []span{
		{prefix: "/members/", rev: 10},
		{prefix: "/nodes/", after: "", last: "/nodes/m/host", rev: 10},
		{prefix: "/nodes/", after: "/nodes/m/host", rev: 12},
	}}
	tests := []struct {
		key  string
		rev  uint64
		want bool
	}{
		{"/members/a", 10, true},
		{"/members/a", 11, false},
		{"/nodes/a/host", 10, true},
		{"/nodes/a/host", 11, false},
		{"/nodes/m/host", 10, true},
		{"/nodes/z/host", 11, true}, // its page was read at 12
		{"/nodes/z/host", 12, true},
		{"/nodes/z/host", 13, false},
		{"/app/x", 11, false},
	}
	for _, tt := range tests {
		if got := p.covered(tt.key, tt.rev); got != tt.want {
			t.Errorf("covered(%s, %d) = %v, want %v", tt.key, tt.rev, got, tt.want)
		}
	}
	var none *pages
	if none.covered("/nodes/a/host", 1) {
		t.Error("no pages cover nothing")
	}
}

func TestUpdateNamesTheBadField(t *testing.T) {
	ok := hostRecord("web1", 1, "10.0.0.1")
	tests := []struct {
		name  string
		edit  func(r *hivemindv1.HostRecord)
		field string
	}{
		{"no node", func(r *hivemindv1.HostRecord) { r.Node = "" }, "node"},
		{"bad node", func(r *hivemindv1.HostRecord) { r.Node = "a/b" }, "node"},
		{"no seq", func(r *hivemindv1.HostRecord) { r.Seq = 0 }, "seq"},
		{"bad address", func(r *hivemindv1.HostRecord) { r.Addresses = []string{"10.0.0.1", "x"} }, "addresses[1]"},
		{"bad port", func(r *hivemindv1.HostRecord) { r.Services[0].Port = 70000 }, "services[0].port"},
		{"no service name", func(r *hivemindv1.HostRecord) { r.Services[0].Name = "" }, "services[0].name"},
		{"bad status", func(r *hivemindv1.HostRecord) { r.Services[0].Status = 9 }, "services[0].status"},
		{"empty tag", func(r *hivemindv1.HostRecord) { r.Tags = []string{""} }, "tags[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := hostRecord("web1", 1, "10.0.0.1")
			tt.edit(r)
			_, err := update(r, "", 0)
			var fe *fieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("err %v, want a field error on %s", err, tt.field)
			}
		})
	}
	u, err := update(ok, "", 7)
	if err != nil || u.Op != hoststate.Put || u.Host != "web1" || u.Seq != 1 || u.Revision != 7 || u.Record.Services[0].Health != hoststate.Passing {
		t.Errorf("good record: %+v, %v", u, err)
	}
	// A record that went round a peer's HostSnapshot reads the same.
	back, err := update(recordOf(u.Record), "", 0)
	if err != nil || back.Record.Addrs[0] != u.Record.Addrs[0] || back.Record.Services[0].Port != 80 {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	gone, err := update(&hivemindv1.HostRecord{Node: "web1", Seq: 4, Gone: true}, "", 0)
	if err != nil || gone.Op != hoststate.Delete || gone.Seq != 4 {
		t.Errorf("gone: %+v, %v", gone, err)
	}
}

func TestNodeOfHostKey(t *testing.T) {
	for key, want := range map[string]string{
		"/nodes/web1/host":        "web1",
		"/nodes/web1/host/x":      "",
		"/nodes/web1/checks/host": "",
		"/nodes//host":            "",
		"/members/web1":           "",
	} {
		if got := nodeOfHostKey(key); got != want {
			t.Errorf("nodeOfHostKey(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestFlags(t *testing.T) {
	f := Flags{Zone: "hive.", TTLNode: 10, TTLService: 5, TTLApex: 3600, TTLNegative: 5, UDPSize: 1232,
		NameServers: "ns1.hive.=10.0.0.1,ns1.hive.=::1,ns.example.org."}
	c, err := f.DNSConfig()
	if err != nil {
		t.Fatal(err)
	}
	ns := c.Zone.NameServers
	if len(ns) != 2 || ns[0].Name != "ns1.hive." || len(ns[0].Addrs) != 2 || ns[1].Name != "ns.example.org." {
		t.Errorf("name servers %+v", ns)
	}
	for _, bad := range []Flags{
		{Zone: "hive.", TTLNode: 0, TTLService: 5, TTLApex: 1, TTLNegative: 1, UDPSize: 1232},
		{Zone: "hive.", TTLNode: 1, TTLService: 5, TTLApex: 1, TTLNegative: 1, UDPSize: 100},
		{Zone: "hive.", TTLNode: 1, TTLService: 5, TTLApex: 1, TTLNegative: 1, UDPSize: 1232, NameServers: "ns.hive.=nope"},
		{Zone: "bad..zone", TTLNode: 1, TTLService: 5, TTLApex: 1, TTLNegative: 1, UDPSize: 1232},
	} {
		if _, err := bad.DNSConfig(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
