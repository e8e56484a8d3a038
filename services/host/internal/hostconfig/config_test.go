package hostconfig

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/check"
)

func noHostname() (string, error) { return "", errors.New("no host name in tests") }

func TestExample(t *testing.T) {
	c, data, err := Loader{Path: "testdata/example.yaml", Hostname: noHostname}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 || c.Node != "web-1" || len(c.Addrs()) != 2 || c.Meta["rack"] != "r12" {
		t.Fatalf("node part: %+v", c)
	}
	web, db := c.Services[0], c.Services[1]
	if db.ID != "db" || db.Weight != DefaultWeight || web.Weight != 10 {
		t.Errorf("service defaults: %+v %+v", web, db)
	}
	want := []struct {
		id       string
		kind     check.Kind
		interval time.Duration
		timeout  time.Duration
	}{
		{"http-0", check.KindHTTP, 5 * time.Second, 2 * time.Second},
		{"tcp-1", check.KindTCP, DefaultInterval, DefaultTimeout},
		{"grpc-2", check.KindGRPC, DefaultInterval, DefaultTimeout},
		{"exec-3", check.KindExec, DefaultInterval, DefaultTimeout},
		{"heartbeat", check.KindTTL, 0, 0},
	}
	if len(web.Checks) != len(want) {
		t.Fatalf("%d checks", len(web.Checks))
	}
	for i, w := range want {
		ch := web.Checks[i]
		if ch.ID != w.id || ch.Name != w.id || ch.Kind() != w.kind || ch.Interval != w.interval || ch.Timeout != w.timeout {
			t.Errorf("checks[%d] = %+v, want %+v", i, ch, w)
		}
	}
	if web.Checks[0].Method != "GET" {
		t.Errorf("method default %q", web.Checks[0].Method)
	}

	svcs := c.CheckServices()
	if len(svcs) != 2 || svcs[0].ID != "web-8080" || len(svcs[0].Checks) != 5 || len(svcs[1].Checks) != 0 {
		t.Fatalf("CheckServices: %+v", svcs)
	}
	d := svcs[0].Checks[0]
	if d.Kind != check.KindHTTP || d.Header.Get("X-Probe") != "hivemind" || svcs[0].Checks[4].TTL != 30*time.Second {
		t.Errorf("definitions: %+v", svcs[0].Checks)
	}
	// The runner takes what the config produces.
	r := check.NewRunner(check.Options{FirstRun: func(time.Duration) time.Duration { return time.Hour }})
	defer r.Stop()
	if err := r.SetServices(svcs); err != nil {
		t.Fatalf("runner refuses a valid config: %v", err)
	}
	if AppPath("shop/feature-flags") != "/app/shop/feature-flags" {
		t.Error("AppPath")
	}
}

func TestNodeDefaultsToHostname(t *testing.T) {
	c, _, err := Loader{Hostname: func() (string, error) { return "Box7.example.com", nil }}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "box7" {
		t.Errorf("node %q", c.Node)
	}
	if _, _, err := (Loader{Hostname: noHostname}).Load(); err == nil {
		t.Error("no node and no host name accepted")
	}
}

func TestParseRefusesUnknownFields(t *testing.T) {
	_, err := Parse([]byte("node: a\nservices:\n  - name: web\n    prot: 80\n"))
	if err == nil || !strings.Contains(err.Error(), "prot") {
		t.Fatalf("typo not reported: %v", err)
	}
	if c, err := Parse(nil); err != nil || c == nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestValidate(t *testing.T) {
	base := func() *Config {
		return &Config{Node: "n1", Services: []Service{{Name: "web", Port: 80, Checks: []Check{{TCP: "127.0.0.1:80"}}}}}
	}
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   []string // paths and messages, each a substring of one error
	}{
		{"valid", func(*Config) {}, nil},
		{"node", func(c *Config) { c.Node = "-bad" }, []string{"node: must be a DNS label"}},
		{"long node", func(c *Config) { c.Node = strings.Repeat("a", 64) }, []string{"node: must be a DNS label"}},
		{"address", func(c *Config) { c.Addresses = []string{"10.0.0.1", "nope", "10.0.0.1", "0.0.0.0", "fe80::1%eth0"} },
			[]string{`addresses[1]: not an IP`, `addresses[2]: duplicate`, `addresses[3]: not a unicast`, `addresses[4]: an address with a zone`}},
		{"tags", func(c *Config) { c.Tags = []string{"a", "A", "b_c"} }, []string{`tags[1]: duplicate`, `tags[2]: must be a DNS label`}},
		{"meta", func(c *Config) {
			c.Meta = map[string]string{"ok": "v", "bad key": "v", "big": strings.Repeat("x", MaxMetaValue+1)}
		},
			[]string{`meta["bad key"]: key must be`, `meta["big"]: value is 513 bytes`}},
		{"service fields", func(c *Config) {
			c.Services[0].Name, c.Services[0].Port, c.Services[0].Weight, c.Services[0].ID = "web_1", 0, 70000, "a/b"
		}, []string{"services[0].name: must be a DNS label", "services[0].port: must be 1-65535", "services[0].weight: must be 1-65535", "services[0].id: must be"}},
		{"duplicate service id", func(c *Config) { c.Services = append(c.Services, c.Services[0]) }, []string{`services[1].id: "web" already used by services[0]`}},
		{"no probe", func(c *Config) { c.Services[0].Checks[0] = Check{} }, []string{"services[0].checks[0]: set exactly one of"}},
		{"two probes", func(c *Config) { c.Services[0].Checks[0].HTTP = "http://x/" }, []string{"services[0].checks[0]: set exactly one of"}},
		{"interval", func(c *Config) { c.Services[0].Checks[0].Interval = 500 * time.Millisecond },
			[]string{"services[0].checks[0].interval: must be 1s-24h0m0s, got 500ms"}},
		{"timeout over interval", func(c *Config) { c.Services[0].Checks[0].Timeout = time.Minute },
			[]string{"services[0].checks[0].timeout: must be 10ms up to the interval (10s), got 1m0s"}},
		{"tcp", func(c *Config) { c.Services[0].Checks[0].TCP = "localhost" }, []string{"services[0].checks[0].tcp: must be host:port"}},
		{"tcp port", func(c *Config) { c.Services[0].Checks[0].TCP = "localhost:99999" }, []string{"services[0].checks[0].tcp: port must be"}},
		{"http", func(c *Config) {
			c.Services[0].Checks[0] = Check{HTTP: "ftp://x/", Method: "get", Header: map[string][]string{"Bad Name": {"v"}, "X": {"a\nb"}}}
		},
			[]string{"checks[0].http: must be an http://", "checks[0].method: must be an upper-case", `checks[0].header["Bad Name"]: not a valid`, `checks[0].header["X"]: value has a line break`}},
		{"field of another kind", func(c *Config) { c.Services[0].Checks[0].Method = "POST"; c.Services[0].Checks[0].GRPCService = "x" },
			[]string{"checks[0].method: not used by a tcp check", "checks[0].grpc_service: not used by a tcp check"}},
		{"exec", func(c *Config) { c.Services[0].Checks[0] = Check{Args: []string{}} }, []string{"checks[0].args: must name a program"}},
		{"ttl", func(c *Config) { c.Services[0].Checks[0] = Check{TTL: time.Millisecond, Interval: time.Second} },
			[]string{"checks[0].ttl: must be 1s-24h0m0s", "checks[0].interval: not used by a ttl check"}},
		{"check ids", func(c *Config) {
			c.Services[0].Checks = append(c.Services[0].Checks, Check{Name: "tcp-0", TCP: "h:1"})
		}, []string{`services[0].checks[1].id: "tcp-0" already used by checks[0]`}},
		{"publish", func(c *Config) {
			c.Publish = map[string]string{"ok/key": "v", "/abs": "v", "a//b": "v", "a/../b": "v", "big": strings.Repeat("x", MaxPublishValue+1)}
		}, []string{`publish["/abs"]: key must be`, `publish["a//b"]: key must be`, `publish["a/../b"]: key must be`, `publish["big"]: value is`}},
		{"probes", func(c *Config) { c.Probes = map[string][]string{"disk": {"/bin/df"}, "Bad": {"x"}, "empty": nil} },
			[]string{`probes["Bad"]: name must be`, `probes["empty"]: must name a program`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.change(c)
			if err := c.SetDefaults(noHostname); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("not a FieldError: %v", err)
			}
			all := strings.Split(err.Error(), "\n")
			for _, w := range tc.want {
				found := false
				for _, line := range all {
					found = found || strings.Contains(line, w)
				}
				if !found {
					t.Errorf("missing %q in:\n%v", w, err)
				}
			}
			if len(all) != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%v", len(all), len(tc.want), err)
			}
		})
	}
}

func TestFlagsOverrideFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "host.yaml")
	if err := os.WriteFile(path, []byte("node: from-file\ntags: [a]\naddresses: [10.0.0.1]\nmeta: {k: v}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f := RegisterFlags(fs)
	if err := fs.Parse([]string{"--config", path, "--node", "from-flag", "--address", "10.0.0.2,10.0.0.3", "--address", "10.0.0.4", "--include-loopback"}); err != nil {
		t.Fatal(err)
	}
	c, _, err := f.Loader().Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "from-flag" || strings.Join(c.Addresses, " ") != "10.0.0.2 10.0.0.3 10.0.0.4" || !c.IncludeLoopback {
		t.Errorf("overridden: %+v", c)
	}
	if len(c.Tags) != 1 || c.Meta["k"] != "v" {
		t.Errorf("fields without a flag changed: %+v", c)
	}
	if err := fs.Parse([]string{"--meta", "novalue"}); err == nil {
		t.Error("--meta without = accepted")
	}
}
