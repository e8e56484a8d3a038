// Package hostsfile is a processor that keeps a file in /etc/hosts format
// listing every served host, for programs that read hosts files rather than
// ask DNS. The file is replaced atomically, so a reader sees the old file or
// the new one, never half of one.
package hostsfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/hivemind/hivemind/pkg/atomicfile"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/zone"
)

// Config says where the file goes and how its names are spelled.
type Config struct {
	// Path is the file to write. Its directory must exist.
	Path string
	// Origin is the DNS zone; each address is listed with the host's name
	// in it, <node>.node.<origin>, then the bare node name (default "hive.").
	Origin string
	// Mode is the file's permission bits (default 0644).
	Mode os.FileMode
}

// Writer writes the hosts file. Its Update is not safe for concurrent use;
// processor.Run calls it from one goroutine.
type Writer struct {
	cfg  Config
	last []byte // what the file holds, as far as this writer knows
}

// New returns a writer for cfg.
func New(cfg Config) (*Writer, error) {
	if cfg.Path == "" {
		return nil, errors.New("hostsfile: no path")
	}
	if cfg.Origin == "" {
		cfg.Origin = zone.DefaultOrigin
	}
	cfg.Origin = strings.Trim(strings.ToLower(cfg.Origin), ".")
	if cfg.Mode == 0 {
		cfg.Mode = 0o644
	}
	return &Writer{cfg: cfg}, nil
}

// Update rewrites the file when snap changes what it lists.
func (w *Writer) Update(_ context.Context, snap *hoststate.Snapshot) error {
	content := w.render(snap)
	if w.last == nil {
		// First call: a restart with unchanged hosts leaves the file alone.
		if old, err := os.ReadFile(w.cfg.Path); err == nil {
			w.last = old
		}
	}
	if w.last != nil && bytes.Equal(content, w.last) {
		return nil
	}
	if err := atomicfile.Write(w.cfg.Path, content, w.cfg.Mode); err != nil {
		return fmt.Errorf("hostsfile: %w", err)
	}
	w.last = content
	return nil
}

// render lists one line per address of each served host, hosts in name
// order, addresses in the order the host gave them. Failed hosts and names
// that cannot be DNS labels are left out, as DNS leaves them out.
func (w *Writer) render(snap *hoststate.Snapshot) []byte {
	var b bytes.Buffer
	b.WriteString("# Written by hivemind-dns; do not edit: it is replaced on every change.\n")
	for _, h := range snap.Hosts() {
		node, ok := zone.Label(h.Name)
		if !ok || h.Failed {
			continue
		}
		for _, a := range h.Addrs {
			fmt.Fprintf(&b, "%s\t%s.node.%s %s\n", a.Unmap(), node, w.cfg.Origin, node)
		}
	}
	return b.Bytes()
}
