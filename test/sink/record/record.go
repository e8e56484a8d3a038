// Package record keeps what a test sink received and serves it as JSON,
// so an end-to-end script can count deliveries with curl and jq.
package record

import (
	"encoding/json"
	"net/http"
	"sync"
)

// Log is an append-only list of received items, safe for concurrent use.
type Log[T any] struct {
	mu    sync.Mutex
	items []T
}

// Add appends an item.
func (l *Log[T]) Add(it T) {
	l.mu.Lock()
	l.items = append(l.items, it)
	l.mu.Unlock()
}

// Items returns a copy of everything received so far, oldest first.
func (l *Log[T]) Items() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]T(nil), l.items...)
}

// ServeHTTP answers GET with the items as a JSON array.
func (l *Log[T]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	items := l.Items()
	if items == nil {
		items = []T{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(items)
}
