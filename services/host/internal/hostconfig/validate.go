package hostconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/check"
)

// Limits. Names become DNS labels (<node>.node.<zone>,
// <tag>.<service>.service.<zone>), so they follow RFC 1123 label rules;
// metadata follows Consul's limits, so a Consul configuration carries over.
const (
	MaxLabel         = 63 // node, service and tag names: RFC 1123 labels
	MaxAddresses     = 64
	MaxTags          = 64
	MaxMeta          = 64 // pairs per node or service
	MaxMetaKey       = 128
	MaxMetaValue     = 512
	MaxServices      = 256
	MaxID            = 128 // service and check ids
	MaxChecks        = 32  // per service
	MinInterval      = time.Second
	MaxInterval      = 24 * time.Hour
	MinTimeout       = 10 * time.Millisecond
	MinTTL           = time.Second
	MaxTTL           = 24 * time.Hour
	MaxArgs          = 64
	MaxPublish       = 1024
	MaxPublishKey    = 256
	MaxPublishValue  = 64 << 10
	MaxPublishTotal  = 1 << 20
	MaxProbes        = 64
	MaxGRPCService   = 256
	MaxHeaderEntries = 32
)

var (
	labelRE   = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)
	idRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	metaKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	segmentRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	probeRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	methodRE  = regexp.MustCompile(`^[A-Z]+$`)
	headerRE  = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// FieldError is one problem with one field.
type FieldError struct {
	Path string // "services[2].checks[0].interval"
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// errs collects field errors.
type errs []error

func (e *errs) add(path, format string, args ...any) {
	*e = append(*e, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Validate reports every field that breaks a rule, joined; each is a
// *FieldError. It expects defaults to be filled.
func (c *Config) Validate() error {
	var e errs
	label(&e, "node", c.Node)
	if len(c.Addresses) > MaxAddresses {
		e.add("addresses", "at most %d, got %d", MaxAddresses, len(c.Addresses))
	}
	seenAddr := map[netip.Addr]bool{}
	for i, a := range c.Addresses {
		p := fmt.Sprintf("addresses[%d]", i)
		ip, err := netip.ParseAddr(a)
		switch {
		case err != nil:
			e.add(p, "not an IP address: %q", a)
		case ip.Zone() != "":
			e.add(p, "an address with a zone cannot be published: %q", a)
		case ip.IsUnspecified() || ip.IsMulticast():
			e.add(p, "not a unicast address: %q", a)
		case seenAddr[ip.Unmap()]:
			e.add(p, "duplicate %q", a)
		default:
			seenAddr[ip.Unmap()] = true
		}
	}
	tags(&e, "tags", c.Tags)
	meta(&e, "meta", c.Meta)

	if len(c.Services) > MaxServices {
		e.add("services", "at most %d, got %d", MaxServices, len(c.Services))
	}
	ids := map[string]int{}
	for i := range c.Services {
		p := fmt.Sprintf("services[%d]", i)
		c.Services[i].validate(&e, p)
		if id := c.Services[i].ID; id != "" {
			if j, dup := ids[id]; dup {
				e.add(p+".id", "%q already used by services[%d]", id, j)
			} else {
				ids[id] = i
			}
		}
	}

	if len(c.Publish) > MaxPublish {
		e.add("publish", "at most %d entries, got %d", MaxPublish, len(c.Publish))
	}
	total := 0
	for _, k := range sortedKeys(c.Publish) {
		p := fmt.Sprintf("publish[%q]", k)
		publishKey(&e, p, k)
		if v := c.Publish[k]; len(v) > MaxPublishValue {
			e.add(p, "value is %d bytes, at most %d", len(v), MaxPublishValue)
		}
		total += len(c.Publish[k])
	}
	if total > MaxPublishTotal {
		e.add("publish", "values total %d bytes, at most %d", total, MaxPublishTotal)
	}

	if len(c.Probes) > MaxProbes {
		e.add("probes", "at most %d, got %d", MaxProbes, len(c.Probes))
	}
	for _, name := range sortedKeys(c.Probes) {
		p := fmt.Sprintf("probes[%q]", name)
		if len(name) > MaxLabel || !probeRE.MatchString(name) {
			e.add(p, "name must be 1-%d of a-z, 0-9, '-', '_', starting with a letter or digit", MaxLabel)
		}
		argv(&e, p, c.Probes[name])
	}
	return errors.Join(e...)
}

func (s *Service) validate(e *errs, p string) {
	label(e, p+".name", s.Name)
	if len(s.ID) > MaxID || !idRE.MatchString(s.ID) {
		e.add(p+".id", "must be 1-%d of A-Z, a-z, 0-9, '.', '_', '-', starting with a letter or digit; got %q", MaxID, s.ID)
	}
	if s.Port < 1 || s.Port > 65535 {
		e.add(p+".port", "must be 1-65535, got %d", s.Port)
	}
	if s.Weight < 1 || s.Weight > 65535 {
		e.add(p+".weight", "must be 1-65535, got %d", s.Weight)
	}
	tags(e, p+".tags", s.Tags)
	meta(e, p+".meta", s.Meta)
	if len(s.Checks) > MaxChecks {
		e.add(p+".checks", "at most %d, got %d", MaxChecks, len(s.Checks))
	}
	ids := map[string]int{}
	for i := range s.Checks {
		cp := fmt.Sprintf("%s.checks[%d]", p, i)
		s.Checks[i].validate(e, cp)
		if id := s.Checks[i].ID; id != "" {
			if j, dup := ids[id]; dup {
				e.add(cp+".id", "%q already used by checks[%d]", id, j)
			} else {
				ids[id] = i
			}
		}
	}
}

func (c *Check) validate(e *errs, p string) {
	kind := c.Kind()
	if kind == "" {
		e.add(p, "set exactly one of tcp, http, grpc, args, ttl")
		return
	}
	if len(c.ID) > MaxID || !idRE.MatchString(c.ID) {
		e.add(p+".id", "must be 1-%d of A-Z, a-z, 0-9, '.', '_', '-', starting with a letter or digit; got %q", MaxID, c.ID)
	}
	only := func(field string, set bool, kinds ...check.Kind) {
		if set && !slices.Contains(kinds, kind) {
			e.add(p+"."+field, "not used by a %s check", kind)
		}
	}
	only("method", c.Method != "", check.KindHTTP)
	only("header", len(c.Header) > 0, check.KindHTTP)
	only("tls_skip_verify", c.TLSSkipVerify, check.KindHTTP, check.KindGRPC)
	only("grpc_service", c.GRPCService != "", check.KindGRPC)
	only("grpc_use_tls", c.GRPCUseTLS, check.KindGRPC)

	if kind == check.KindTTL {
		only("interval", c.Interval != 0)
		only("timeout", c.Timeout != 0)
		if c.TTL < MinTTL || c.TTL > MaxTTL {
			e.add(p+".ttl", "must be %s-%s, got %s", MinTTL, MaxTTL, c.TTL)
		}
		return
	}
	if c.Interval < MinInterval || c.Interval > MaxInterval {
		e.add(p+".interval", "must be %s-%s, got %s", MinInterval, MaxInterval, c.Interval)
	}
	if c.Timeout < MinTimeout || c.Timeout > c.Interval {
		e.add(p+".timeout", "must be %s up to the interval (%s), got %s", MinTimeout, c.Interval, c.Timeout)
	}
	switch kind {
	case check.KindTCP:
		hostPort(e, p+".tcp", c.TCP)
	case check.KindGRPC:
		hostPort(e, p+".grpc", c.GRPC)
		if len(c.GRPCService) > MaxGRPCService {
			e.add(p+".grpc_service", "at most %d bytes", MaxGRPCService)
		}
	case check.KindExec:
		argv(e, p+".args", c.Args)
	case check.KindHTTP:
		u, err := url.Parse(c.HTTP)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			e.add(p+".http", "must be an http:// or https:// URL with a host, got %q", c.HTTP)
		}
		if !methodRE.MatchString(c.Method) {
			e.add(p+".method", "must be an upper-case HTTP method, got %q", c.Method)
		}
		if len(c.Header) > MaxHeaderEntries {
			e.add(p+".header", "at most %d names", MaxHeaderEntries)
		}
		for _, k := range sortedKeys(c.Header) {
			if !headerRE.MatchString(k) {
				e.add(fmt.Sprintf("%s.header[%q]", p, k), "not a valid header name")
			}
			for _, v := range c.Header[k] {
				if strings.ContainsAny(v, "\r\n\x00") {
					e.add(fmt.Sprintf("%s.header[%q]", p, k), "value has a line break or NUL")
				}
			}
		}
	}
}

func label(e *errs, p, s string) {
	if len(s) > MaxLabel || !labelRE.MatchString(s) {
		e.add(p, "must be a DNS label: 1-%d of A-Z, a-z, 0-9, '-', not starting or ending with '-'; got %q", MaxLabel, s)
	}
}

func tags(e *errs, p string, ts []string) {
	if len(ts) > MaxTags {
		e.add(p, "at most %d, got %d", MaxTags, len(ts))
	}
	seen := map[string]bool{}
	for i, t := range ts {
		tp := fmt.Sprintf("%s[%d]", p, i)
		label(e, tp, t)
		if lt := strings.ToLower(t); seen[lt] {
			e.add(tp, "duplicate %q", t)
		} else {
			seen[lt] = true
		}
	}
}

func meta(e *errs, p string, m map[string]string) {
	if len(m) > MaxMeta {
		e.add(p, "at most %d pairs, got %d", MaxMeta, len(m))
	}
	for _, k := range sortedKeys(m) {
		kp := fmt.Sprintf("%s[%q]", p, k)
		if len(k) > MaxMetaKey || !metaKeyRE.MatchString(k) {
			e.add(kp, "key must be 1-%d of A-Z, a-z, 0-9, '_', '-'", MaxMetaKey)
		}
		if len(m[k]) > MaxMetaValue {
			e.add(kp, "value is %d bytes, at most %d", len(m[k]), MaxMetaValue)
		}
	}
}

func publishKey(e *errs, p, k string) {
	if k == "" || len(k) > MaxPublishKey {
		e.add(p, "key must be 1-%d bytes", MaxPublishKey)
		return
	}
	for _, seg := range strings.Split(k, "/") {
		if seg == "." || seg == ".." || !segmentRE.MatchString(seg) {
			e.add(p, "key must be '/'-separated segments of A-Z, a-z, 0-9, '.', '_', '-' (no leading, trailing or double '/', no '.' or '..'), relative to %s", AppPrefix)
			return
		}
	}
}

func hostPort(e *errs, p, s string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		e.add(p, "must be host:port, got %q", s)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		e.add(p, "port must be 1-65535, got %q", port)
	}
}

func argv(e *errs, p string, args []string) {
	switch {
	case len(args) == 0 || args[0] == "":
		e.add(p, "must name a program (argv, run without a shell)")
	case len(args) > MaxArgs:
		e.add(p, "at most %d arguments, got %d", MaxArgs, len(args))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Fields checks values that do not come from a configuration file (the
// Host API's announcements) with the file's rules, so a name that is a
// valid service name in one place is valid in the other. The zero value is
// ready; Err reports every problem, joined, each a *FieldError.
type Fields struct{ e errs }

// Label checks that s is a DNS label.
func (f *Fields) Label(path, s string) { label(&f.e, path, s) }

// Meta checks metadata against the limits of node and service meta.
func (f *Fields) Meta(path string, m map[string]string) { meta(&f.e, path, m) }

// HostPort checks that s is host:port with a port in 1-65535.
func (f *Fields) HostPort(path, s string) { hostPort(&f.e, path, s) }

// Add records a problem with a field.
func (f *Fields) Add(path, format string, args ...any) { f.e.add(path, format, args...) }

// Err is every problem found, or nil.
func (f *Fields) Err() error { return errors.Join(f.e...) }
