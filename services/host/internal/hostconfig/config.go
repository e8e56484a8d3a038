// Package hostconfig is the host agent's configuration file: who this node
// is, which addresses and services it publishes, their health checks, the
// configuration entries it publishes under /app/, and the probes it offers.
//
// Example (every field but node optional; see Defaults and Limits):
//
//	node: web-1                # default: the host name's first label
//	addresses: [10.0.0.5]      # default: detected from the interfaces
//	include_loopback: false    # detection keeps 127.0.0.1/::1 only if true or nothing else
//	tags: [eu-west, ssd]
//	meta: {rack: r12}
//	services:
//	  - name: web              # DNS label: web.service.<zone>
//	    id: web-8080           # default: name
//	    port: 8080
//	    tags: [primary]
//	    weight: 10             # SRV weight, default 1
//	    meta: {version: "1.4.2"}
//	    checks:
//	      - http: http://127.0.0.1:8080/healthz
//	        interval: 5s       # default 10s
//	        timeout: 2s        # default min(10s, interval)
//	      - tcp: 127.0.0.1:8080
//	      - grpc: 127.0.0.1:9090
//	        grpc_service: shop.Cart
//	      - args: [/usr/local/bin/check-disk, --min-free, 10%]
//	      - name: heartbeat    # id defaults to name, else <kind>-<index>
//	        ttl: 30s           # renewed through UpdateTTL
//	publish:                   # written to /app/<key>
//	  shop/feature-flags: '{"new-cart": true}'
//	probes:                    # custom pings, argv without a shell
//	  disk: [/usr/local/bin/disk-probe, --json]
//
// A check sets exactly one of tcp, http, grpc, args and ttl. An HTTP check
// may also set method, header (name → values) and tls_skip_verify; a gRPC
// check grpc_service, grpc_use_tls and tls_skip_verify.
//
// Loading goes: decode (unknown fields are errors), apply the flag
// overrides, fill the defaults, validate. Validation reports every problem
// at once, each naming its field: "services[2].checks[0].interval: must be
// at least 1s".
package hostconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/hivemind/hivemind/pkg/hostpublish"
	"github.com/hivemind/hivemind/services/host/internal/check"
)

// Config is the host agent's configuration.
type Config struct {
	Node            string              `yaml:"node"`
	Addresses       []string            `yaml:"addresses"`
	IncludeLoopback bool                `yaml:"include_loopback"`
	Tags            []string            `yaml:"tags"`
	Meta            map[string]string   `yaml:"meta"`
	Services        []Service           `yaml:"services"`
	Publish         map[string]string   `yaml:"publish"`
	Probes          map[string][]string `yaml:"probes"`
}

// Service is a service this host runs.
type Service struct {
	Name   string            `yaml:"name"`
	ID     string            `yaml:"id"`
	Port   int               `yaml:"port"`
	Tags   []string          `yaml:"tags"`
	Weight int               `yaml:"weight"`
	Meta   map[string]string `yaml:"meta"`
	Checks []Check           `yaml:"checks"`
}

// Check is a health check of a service; see check.Definition.
type Check struct {
	ID       string        `yaml:"id"`
	Name     string        `yaml:"name"`
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`

	TCP string `yaml:"tcp"`

	HTTP          string              `yaml:"http"`
	Method        string              `yaml:"method"`
	Header        map[string][]string `yaml:"header"`
	TLSSkipVerify bool                `yaml:"tls_skip_verify"`

	GRPC        string `yaml:"grpc"`
	GRPCService string `yaml:"grpc_service"`
	GRPCUseTLS  bool   `yaml:"grpc_use_tls"`

	Args []string `yaml:"args"`

	TTL time.Duration `yaml:"ttl"`
}

// Kind is the kind of check c is, by the one probe field it sets ("" when
// it sets none or several).
func (c *Check) Kind() check.Kind {
	var kinds []check.Kind
	if c.TCP != "" {
		kinds = append(kinds, check.KindTCP)
	}
	if c.HTTP != "" {
		kinds = append(kinds, check.KindHTTP)
	}
	if c.GRPC != "" {
		kinds = append(kinds, check.KindGRPC)
	}
	if c.Args != nil {
		kinds = append(kinds, check.KindExec)
	}
	if c.TTL != 0 {
		kinds = append(kinds, check.KindTTL)
	}
	if len(kinds) != 1 {
		return ""
	}
	return kinds[0]
}

// Defaults.
const (
	DefaultInterval = 10 * time.Second
	DefaultTimeout  = check.DefaultTimeout // capped at the interval
	DefaultWeight   = 1
	DefaultMethod   = http.MethodGet
)

// Parse decodes a configuration file. It neither fills defaults nor
// validates; Load does both.
func Parse(data []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("hostconfig: %w", err)
	}
	return c, nil
}

// Loader reads the configuration the same way at start and at every reload,
// so flags keep winning over the file.
type Loader struct {
	// Path is the file; "" means no file: flags and defaults only.
	Path string
	// Override, if set, changes the decoded file before defaults and
	// validation (the command line's flags).
	Override func(*Config)
	// Hostname names the node when nothing else does (nil: os.Hostname).
	Hostname func() (string, error)
	// Check, if set, is a last check of a valid configuration against what
	// the running agent cannot change (its node name is its cluster
	// identity); its error is returned like a validation error, so a
	// reload that fails it changes nothing.
	Check func(*Config) error
}

// Load reads, decodes, overrides, fills defaults and validates. The
// returned data is the file's content, for callers that detect changes.
func (l Loader) Load() (*Config, []byte, error) {
	var data []byte
	if l.Path != "" {
		var err error
		if data, err = os.ReadFile(l.Path); err != nil {
			return nil, nil, fmt.Errorf("hostconfig: %w", err)
		}
	}
	c, err := Parse(data)
	if err != nil {
		return nil, data, fmt.Errorf("%s: %w", l.Path, err)
	}
	if l.Override != nil {
		l.Override(c)
	}
	hostname := l.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	if err := c.SetDefaults(hostname); err != nil {
		return nil, data, err
	}
	if err := c.Validate(); err != nil {
		return nil, data, err
	}
	if l.Check != nil {
		if err := l.Check(c); err != nil {
			return nil, data, err
		}
	}
	return c, data, nil
}

// SetDefaults fills every field left empty that has a default.
func (c *Config) SetDefaults(hostname func() (string, error)) error {
	if c.Node == "" {
		h, err := hostname()
		if err != nil {
			return fmt.Errorf("hostconfig: node not set and no host name: %w", err)
		}
		c.Node, _, _ = strings.Cut(strings.ToLower(h), ".")
	}
	for i := range c.Services {
		s := &c.Services[i]
		if s.ID == "" {
			s.ID = s.Name
		}
		if s.Weight == 0 {
			s.Weight = DefaultWeight
		}
		for j := range s.Checks {
			ch := &s.Checks[j]
			kind := ch.Kind()
			if ch.ID == "" {
				ch.ID = ch.Name
			}
			if ch.ID == "" && kind != "" {
				ch.ID = fmt.Sprintf("%s-%d", kind, j)
			}
			if ch.Name == "" {
				ch.Name = ch.ID
			}
			if kind == check.KindTTL || kind == "" {
				continue
			}
			if ch.Interval == 0 {
				ch.Interval = DefaultInterval
			}
			if ch.Timeout == 0 {
				ch.Timeout = min(DefaultTimeout, ch.Interval)
			}
			if kind == check.KindHTTP && ch.Method == "" {
				ch.Method = DefaultMethod
			}
		}
	}
	return nil
}

// Addrs is the configured addresses, parsed. Call it on a validated config.
func (c *Config) Addrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(c.Addresses))
	for _, a := range c.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// AppPrefix is where published configuration entries live in the tree.
const AppPrefix = hostpublish.AppPrefix

// AppPath is the tree path of a published key.
func AppPath(key string) string { return hostpublish.AppPath(key) }

// CheckServices is what the check runner runs: every service with its
// checks.
func (c *Config) CheckServices() []check.Service {
	out := make([]check.Service, len(c.Services))
	for i, s := range c.Services {
		out[i].ID = s.ID
		for _, ch := range s.Checks {
			out[i].Checks = append(out[i].Checks, ch.Definition())
		}
	}
	return out
}

// Definition is c as the check package runs it.
func (c *Check) Definition() check.Definition {
	d := check.Definition{
		ID: c.ID, Name: c.Name, Kind: c.Kind(),
		Interval: c.Interval, Timeout: c.Timeout,
		TCP:  c.TCP,
		HTTP: c.HTTP, Method: c.Method, TLSSkipVerify: c.TLSSkipVerify,
		GRPC: c.GRPC, GRPCService: c.GRPCService, GRPCUseTLS: c.GRPCUseTLS,
		Args: c.Args,
		TTL:  c.TTL,
	}
	if len(c.Header) > 0 {
		d.Header = http.Header{}
		for k, vs := range c.Header {
			for _, v := range vs {
				d.Header.Add(k, v)
			}
		}
	}
	return d
}
