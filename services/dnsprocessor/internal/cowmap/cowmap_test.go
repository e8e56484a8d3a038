package cowmap

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestEditsLeaveOlderMapsAlone applies random edits and checks every
// version against a plain map copied at the time it was made.
func TestEditsLeaveOlderMapsAlone(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var versions []Map[int]
	var want []map[string]int
	cur, ref := Map[int]{}, map[string]int{}
	for range 200 {
		e := cur.Edit()
		for range rng.IntN(20) {
			k := fmt.Sprint("k", rng.IntN(300))
			if rng.IntN(3) == 0 {
				e.Delete(k)
				delete(ref, k)
			} else {
				v := rng.Int()
				e.Set(k, v)
				ref[k] = v
			}
			got, ok := e.Get(k)
			if w, wok := ref[k]; ok != wok || got != w {
				t.Fatalf("edit Get(%s) = %d, %v; want %d, %v", k, got, ok, w, wok)
			}
		}
		cur = e.Map()
		versions = append(versions, cur)
		want = append(want, maps.Clone(ref))
	}
	for i, m := range versions {
		got := maps.Collect(m.All())
		if !maps.Equal(got, want[i]) || m.Len() != len(want[i]) {
			t.Fatalf("version %d: %d keys (Len %d), want %d", i, len(got), m.Len(), len(want[i]))
		}
		for k, v := range want[i] {
			if g, ok := m.Get(k); !ok || g != v {
				t.Fatalf("version %d: Get(%s) = %d, %v; want %d", i, k, g, ok, v)
			}
		}
	}
}

// TestReadersDuringEdits reads published maps while one writer edits:
// under -race, an edit must never write memory a published map shares.
func TestReadersDuringEdits(t *testing.T) {
	var mu sync.Mutex
	cur := Map[int]{}
	get := func() Map[int] { mu.Lock(); defer mu.Unlock(); return cur }
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				m := get()
				n := 0
				for k, v := range m.All() {
					if g, _ := m.Get(k); g != v {
						t.Errorf("Get(%s) = %d during iteration that saw %d", k, g, v)
					}
					n++
				}
				if n != m.Len() {
					t.Errorf("iterated %d keys of a map of %d", n, m.Len())
				}
			}
		})
	}
	for i := range 2000 {
		e := get().Edit()
		e.Set(fmt.Sprint(i%500), i)
		e.Delete(fmt.Sprint((i + 7) % 500))
		m := e.Map()
		mu.Lock()
		cur = m
		mu.Unlock()
	}
	close(done)
	wg.Wait()
}
