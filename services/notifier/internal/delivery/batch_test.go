package delivery

import (
	"testing"
	"time"
)

func TestBatcherWindowAndMax(t *testing.T) {
	flushed := make(chan []int, 10)
	b := NewBatcher(50*time.Millisecond, 3, func(_ string, items []int) { flushed <- items })
	b.Add("k", 1)
	b.Add("k", 2)
	b.Add("k", 3) // reaches max: flushed without waiting for the window
	select {
	case items := <-flushed:
		if len(items) != 3 {
			t.Fatalf("flushed %v", items)
		}
	case <-time.After(40 * time.Millisecond):
		t.Fatal("full batch waited for its window")
	}
	b.Add("k", 4)
	select {
	case items := <-flushed:
		if len(items) != 1 || items[0] != 4 {
			t.Fatalf("flushed %v", items)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("window never ended")
	}
	b.Close()
	if b.Add("k", 5) {
		t.Error("Add after Close accepted")
	}
}
