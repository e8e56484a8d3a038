package hostconfig

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Flags are the command-line flags that override the file. Each flag that
// is given replaces the file's value (lists and maps are replaced whole, not
// merged), so an environment variable can fix one field of a shared file.
type Flags struct {
	Path string // --config
	// CheckOutputInterval is --check-output-interval: how often a change
	// of a check's output alone is published (check.Options.OutputInterval).
	CheckOutputInterval time.Duration

	node            string
	addresses       listValue
	tags            listValue
	meta            mapValue
	includeLoopback optionalBool
}

// RegisterFlags adds the configuration flags to fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.Path, "config", "", "host configuration file (YAML); empty: flags and defaults only")
	fs.DurationVar(&f.CheckOutputInterval, "check-output-interval", 5*time.Minute, "publish a change of a check's output alone at most this often (a status change is published at once, with the output); 0: every change at once")
	fs.StringVar(&f.node, "node", "", "node name, overrides the file's node; the agent requires it to equal --node-name, its cluster identity (default: --node-name)")
	fs.Var(&f.addresses, "address", "address to publish, overrides the file's addresses; repeat or separate with commas (default: detected)")
	fs.Var(&f.tags, "tag", "node tag, overrides the file's tags; repeat or separate with commas")
	fs.Var(&f.meta, "meta", "node metadata key=value, overrides the file's meta; repeat or separate with commas")
	fs.Var(&f.includeLoopback, "include-loopback", "publish loopback addresses when detecting addresses, overrides the file")
	return f
}

// Loader is the loader for these flags.
func (f *Flags) Loader() Loader { return Loader{Path: f.Path, Override: f.Override} }

// Override applies every flag that was given to c.
func (f *Flags) Override(c *Config) {
	if f.node != "" {
		c.Node = f.node
	}
	if f.addresses.set {
		c.Addresses = append([]string(nil), f.addresses.v...)
	}
	if f.tags.set {
		c.Tags = append([]string(nil), f.tags.v...)
	}
	if f.meta.set {
		c.Meta = map[string]string{}
		for k, v := range f.meta.v {
			c.Meta[k] = v
		}
	}
	if f.includeLoopback.set {
		c.IncludeLoopback = f.includeLoopback.v
	}
}

// listValue is a repeatable, comma-separated flag (so one environment
// variable can carry several values).
type listValue struct {
	v   []string
	set bool
}

func (l *listValue) String() string { return strings.Join(l.v, ",") }

func (l *listValue) Set(s string) error {
	l.set = true
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			l.v = append(l.v, part)
		}
	}
	return nil
}

type mapValue struct {
	v   map[string]string
	set bool
}

func (m *mapValue) String() string {
	var parts []string
	for _, k := range sortedKeys(m.v) {
		parts = append(parts, k+"="+m.v[k])
	}
	return strings.Join(parts, ",")
}

func (m *mapValue) Set(s string) error {
	m.set = true
	if m.v == nil {
		m.v = map[string]string{}
	}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok || k == "" {
			return fmt.Errorf("want key=value, got %q", part)
		}
		m.v[k] = v
	}
	return nil
}

type optionalBool struct{ v, set bool }

func (b *optionalBool) String() string { return strconv.FormatBool(b.v) }

func (b *optionalBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.v, b.set = v, true
	return nil
}

func (b *optionalBool) IsBoolFlag() bool { return true }
