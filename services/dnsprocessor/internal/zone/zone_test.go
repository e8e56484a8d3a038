package zone

import (
	"errors"
	"testing"

	"github.com/miekg/dns"

	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
)

func TestLabel(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"web1", "web1", true},
		{"Web-1", "web-1", true},
		{"1a", "1a", true},
		{"", "", false},
		{"-a", "", false},
		{"a-", "", false},
		{"a.b", "", false},
		{"a_b", "", false},
		{"_tcp", "", false},
		{"é", "", false},
		{string(make([]byte, 64)), "", false},
	}
	for _, tt := range tests {
		got, ok := Label(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Label(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBuildRejectsBadConfig(t *testing.T) {
	snap := hoststate.New().Snapshot()
	for _, c := range []Config{
		{Origin: "a..b."},
		{NameServers: []NameServer{{Name: ""}}},
		{Hostmaster: "x..y"},
	} {
		if _, err := Build(c, snap); !errors.Is(err, ErrConfig) {
			t.Errorf("Build(%+v) = %v, want ErrConfig", c, err)
		}
	}
}

// An empty cluster still has its apex; node. and service. do not exist
// until something is below them.
func TestEmptyZone(t *testing.T) {
	z, err := Build(DefaultConfig(), hoststate.New().Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
		rcode int
		n     int
	}{
		{"hive.", dns.TypeSOA, dns.RcodeSuccess, 1},
		{"hive.", dns.TypeNS, dns.RcodeSuccess, 1},
		{"ns.hive.", dns.TypeA, dns.RcodeNameError, 0}, // no addresses configured
		{"node.hive.", dns.TypeA, dns.RcodeNameError, 0},
		{"service.hive.", dns.TypeA, dns.RcodeNameError, 0},
	} {
		r := z.Lookup(q.name, q.qtype)
		if r.Rcode != q.rcode || len(r.Answer) != q.n {
			t.Errorf("%s %s: %s with %d answers, want %s with %d", q.name, dns.TypeToString[q.qtype],
				dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[q.rcode], q.n)
		}
	}
}
