package clock

import (
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	a := f.NewTimer(2 * time.Second)
	b := f.NewTimer(time.Second)
	c := f.NewTimer(3 * time.Second)
	now := f.NewTimer(0)
	select {
	case <-now.C():
	default:
		t.Fatal("a timer of zero did not fire at once")
	}
	if !f.WaitPending(3, time.Second) || f.Pending() != 3 {
		t.Fatalf("pending %d", f.Pending())
	}
	if !c.Stop() || c.Stop() {
		t.Fatal("Stop reports wrongly")
	}
	f.Advance(2 * time.Second)
	for _, tm := range []Timer{a, b} {
		select {
		case at := <-tm.C():
			if !at.Equal(time.Unix(2, 0)) {
				t.Errorf("fired at %v", at)
			}
		default:
			t.Fatal("due timer did not fire")
		}
	}
	f.Advance(time.Hour)
	select {
	case <-c.C():
		t.Fatal("stopped timer fired")
	default:
	}
	if f.WaitPending(1, 10*time.Millisecond) {
		t.Fatal("WaitPending saw a timer that is not there")
	}
	if !f.Now().Equal(time.Unix(3602, 0)) {
		t.Errorf("now %v", f.Now())
	}
}
