package harvest

import (
	"context"
	"crypto/sha256"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/hivemind/hivemind/services/host/internal/clock"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

// DefaultConfigInterval is how often the configuration watcher looks at the
// file.
const DefaultConfigInterval = 2 * time.Second

// ConfigWatcherOptions configure a ConfigWatcher.
type ConfigWatcherOptions struct {
	Interval time.Duration // <= 0: DefaultConfigInterval
	Clock    clock.Clock   // nil: the wall clock
	// OnChange gets the configuration that was active and the one that now
	// is, after a reload that validated and differs.
	OnChange func(old, new *hostconfig.Config)
	// OnError is told why a changed file was not applied (once per content
	// of the file); the old configuration stays active.
	OnError func(error)
}

// ConfigWatcher reloads the configuration file when it changes. A reload
// reads, validates and only then replaces: a bad file leaves the old
// configuration active. Callbacks are called one at a time and must not
// call Reload.
type ConfigWatcher struct {
	loader hostconfig.Loader
	opts   ConfigWatcherOptions

	mu       sync.Mutex // held through a reload and its callback
	current  *hostconfig.Config
	seen     [sha256.Size]byte // content last loaded, good or bad
	lastStat os.FileInfo
}

// NewConfigWatcher watches loader's file, starting from the configuration
// the agent runs with and the file content it was loaded from (both as
// returned by loader.Load).
func NewConfigWatcher(loader hostconfig.Loader, current *hostconfig.Config, data []byte, opts ConfigWatcherOptions) *ConfigWatcher {
	if opts.Interval <= 0 {
		opts.Interval = DefaultConfigInterval
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	w := &ConfigWatcher{loader: loader, opts: opts, current: current, seen: contentKey(true, data)}
	if loader.Path != "" {
		w.lastStat, _ = os.Stat(loader.Path)
	}
	return w
}

// Current is the active configuration. Callers must not change it.
func (w *ConfigWatcher) Current() *hostconfig.Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// Reload loads the file now, whether or not it looks changed (SIGHUP, the
// Reload RPC). It returns the active configuration and whether it changed;
// on error the old configuration stays active and OnError is not called
// (the caller has the error).
func (w *ConfigWatcher) Reload() (*hostconfig.Config, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.loader.Path != "" {
		w.lastStat, _ = os.Stat(w.loader.Path)
	}
	cfg, data, err := w.loader.Load()
	w.seen = contentKey(w.lastStat != nil, data)
	if err != nil {
		return w.current, false, err
	}
	return w.current, w.apply(cfg), nil
}

// apply makes cfg active if it differs; w.mu is held.
func (w *ConfigWatcher) apply(cfg *hostconfig.Config) bool {
	if reflect.DeepEqual(cfg, w.current) {
		return false
	}
	old := w.current
	w.current = cfg
	if w.opts.OnChange != nil {
		w.opts.OnChange(old, cfg)
	}
	return true
}

// Run polls the file until ctx ends and returns ctx's error. Without a
// file there is nothing to watch and it just waits.
func (w *ConfigWatcher) Run(ctx context.Context) error {
	if w.loader.Path == "" {
		<-ctx.Done()
		return ctx.Err()
	}
	for {
		t := w.opts.Clock.NewTimer(w.opts.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
		w.poll()
	}
}

// poll reloads when the file looks different (a new mtime, size or inode,
// so an editor's rename and a Kubernetes ConfigMap's symlink swap count)
// and its content differs from what was last loaded.
func (w *ConfigWatcher) poll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	fi, statErr := os.Stat(w.loader.Path)
	if statErr == nil && w.lastStat != nil && os.SameFile(fi, w.lastStat) &&
		fi.ModTime().Equal(w.lastStat.ModTime()) && fi.Size() == w.lastStat.Size() {
		return
	}
	w.lastStat = fi
	cfg, data, err := w.loader.Load()
	sum := contentKey(statErr == nil, data)
	if sum == w.seen {
		return // touched, not changed; or the same bad (or missing) file again
	}
	w.seen = sum
	if err != nil {
		if w.opts.OnError != nil {
			w.opts.OnError(err)
		}
		return
	}
	w.apply(cfg)
}

// contentKey tells file contents apart, and a missing file from an empty
// one.
func contentKey(exists bool, data []byte) [sha256.Size]byte {
	h := sha256.New()
	if exists {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	h.Write(data)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}
