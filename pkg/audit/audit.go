// Package audit writes hivemind's audit trail: one JSON line per call
// that changed or administered something, and per call that was refused,
// saying who called what on which resource and how it ended.
//
// A record never holds a value, a secret or an error message (messages may
// quote what the caller sent); only the names of things: the caller's
// identity, the method, the key, prefix, URI or name the request was
// about, and the status code.
package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Record is one line of the audit log.
type Record struct {
	Time time.Time `json:"time"`
	// Member is the node that served the call.
	Member string `json:"member"`
	// Caller is "node:NAME", "operator:NAME" (the token's name, never its
	// secret) or "anonymous" when the call carried no valid credential.
	Caller string `json:"caller"`
	Method string `json:"method"`
	// Resource is what the request named: a key, prefix, event URI,
	// subscription or member name. Empty when it names none.
	Resource string `json:"resource,omitempty"`
	// Code is the gRPC status code the call ended with ("OK", …).
	Code string `json:"code"`
	// Refused is true for calls refused for who made them or how much:
	// UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED.
	Refused bool `json:"refused,omitempty"`
	// RequestID is the caller's x-request-id, or one made here.
	RequestID string `json:"request_id"`
	Peer      string `json:"peer,omitempty"`
}

// Log writes records as JSON lines. Safe for concurrent use; a nil *Log
// writes nothing.
type Log struct {
	member string
	mu     sync.Mutex
	enc    *json.Encoder
	c      io.Closer
	err    error // the first write error, reported once
	onErr  func(error)
}

// Open returns a log for the member called member, writing to path: "-"
// or "stderr" for standard error, otherwise a file opened for appending
// (created 0600). An empty path returns nil: no audit log. onErr, if set,
// hears of the first write error (the log goes on trying).
func Open(path, member string, onErr func(error)) (*Log, error) {
	switch path {
	case "":
		return nil, nil
	case "-", "stderr":
		return New(os.Stderr, member, onErr), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	l := New(f, member, onErr)
	l.c = f
	return l, nil
}

// New returns a log writing to w.
func New(w io.Writer, member string, onErr func(error)) *Log {
	return &Log{member: member, enc: json.NewEncoder(w), onErr: onErr}
}

// Write appends r, filling Member and Time when they are empty.
func (l *Log) Write(r Record) {
	if l == nil {
		return
	}
	if r.Member == "" {
		r.Member = l.member
	}
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.enc.Encode(r); err != nil && l.err == nil {
		l.err = err
		if l.onErr != nil {
			l.onErr(err)
		}
	}
}

// Close closes the file the log writes to, if it opened one.
func (l *Log) Close() error {
	if l == nil || l.c == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c.Close()
}
