package delivery

import (
	"sync"
	"time"
)

// Batcher gathers items per key (a subscription) for a window and hands
// each key's items to Flush at once, so a burst of events becomes one mail
// ("3 changes: web-1 is down, web-2 is down, …") instead of many.
//
// The window starts with a key's first item; it does not slide, so a
// steady stream still produces a mail every window. T is what the caller
// needs to finish each item (typically the event and its claim).
type Batcher[T any] struct {
	window time.Duration
	max    int
	flush  func(key string, items []T)

	mu      sync.Mutex
	pending map[string]*batch[T]
	closed  bool
	running sync.WaitGroup
}

type batch[T any] struct {
	items []T
	timer *time.Timer
}

// NewBatcher returns a Batcher that calls flush, on a goroutine of its
// own, with a key's items window after the first of them, or as soon as
// there are max of them (max <= 0: no bound).
func NewBatcher[T any](window time.Duration, max int, flush func(key string, items []T)) *Batcher[T] {
	return &Batcher[T]{window: window, max: max, flush: flush, pending: map[string]*batch[T]{}}
}

// Add queues item under key. It returns false, and keeps nothing, once the
// Batcher is closed.
func (b *Batcher[T]) Add(key string, item T) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	bt := b.pending[key]
	if bt == nil {
		bt = &batch[T]{}
		b.pending[key] = bt
		bt.timer = time.AfterFunc(b.window, func() { b.flushKey(key, bt) })
	}
	bt.items = append(bt.items, item)
	if b.max > 0 && len(bt.items) >= b.max {
		bt.timer.Stop()
		b.startLocked(key, bt)
	}
	return true
}

func (b *Batcher[T]) flushKey(key string, bt *batch[T]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pending[key] == bt {
		b.startLocked(key, bt)
	}
}

// startLocked takes bt out of the pending set and flushes it.
func (b *Batcher[T]) startLocked(key string, bt *batch[T]) {
	delete(b.pending, key)
	b.running.Add(1)
	go func() {
		defer b.running.Done()
		b.flush(key, bt.items)
	}()
}

// Close flushes every pending batch now and waits until all flushes,
// earlier ones included, have returned.
func (b *Batcher[T]) Close() {
	b.mu.Lock()
	b.closed = true
	for key, bt := range b.pending {
		bt.timer.Stop()
		b.startLocked(key, bt)
	}
	b.mu.Unlock()
	b.running.Wait()
}
