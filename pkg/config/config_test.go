package config

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

func newFS() (*flag.FlagSet, *string, *int, *time.Duration) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(&bytes.Buffer{})
	s := fs.String("grpc-addr", "127.0.0.1:7000", "address to listen on")
	n := fs.Int("count", 3, "how many")
	d := fs.Duration("timeout", time.Second, "how long")
	return fs, s, n, d
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestParsePrecedence(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		addr  string
		count int
	}{
		{"defaults", nil, nil, "127.0.0.1:7000", 3},
		{"env fills", nil, map[string]string{"HIVEMIND_GRPC_ADDR": ":9", "HIVEMIND_COUNT": "5"}, ":9", 5},
		{"flag beats env", []string{"--grpc-addr", ":1"}, map[string]string{"HIVEMIND_GRPC_ADDR": ":9"}, ":1", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, s, n, _ := newFS()
			if err := Parse(fs, tt.args, env(tt.env)); err != nil {
				t.Fatal(err)
			}
			if *s != tt.addr || *n != tt.count {
				t.Fatalf("got addr=%q count=%d, want %q %d", *s, *n, tt.addr, tt.count)
			}
		})
	}
}

func TestParseBadEnvNamesVariable(t *testing.T) {
	fs, _, _, _ := newFS()
	err := Parse(fs, nil, env(map[string]string{"HIVEMIND_TIMEOUT": "soon"}))
	if err == nil || !strings.Contains(err.Error(), "HIVEMIND_TIMEOUT") {
		t.Fatalf("want error naming HIVEMIND_TIMEOUT, got %v", err)
	}
}

func TestUsageListsEveryFlag(t *testing.T) {
	fs, _, _, _ := newFS()
	var out bytes.Buffer
	PrintUsage(&out, fs, "hivemind-test", "Does things.")
	for _, want := range []string{"--grpc-addr", "HIVEMIND_GRPC_ADDR", "default: 127.0.0.1:7000", "--count", "--timeout", "default: 1s", "Does things."} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("metrics-addr"); got != "HIVEMIND_METRICS_ADDR" {
		t.Fatal(got)
	}
}
