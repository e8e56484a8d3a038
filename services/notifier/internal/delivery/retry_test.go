package delivery

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffFullJitterWithinCeiling(t *testing.T) {
	p := Policy{InitialBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond}.withDefaults()
	for n, ceiling := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 80, 5: 80, 40: 80, 200: 80} {
		ceiling *= time.Millisecond
		var max time.Duration
		for range 2000 {
			d := p.backoff(n)
			if d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", n, d, ceiling)
			}
			max = maxDuration(max, d)
		}
		if max < ceiling/2 {
			t.Errorf("backoff(%d) never above %v in 2000 draws; ceiling %v", n, max, ceiling)
		}
	}
}

func maxDuration(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func TestRunVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		verdicts []Verdict
		state    State
	}{
		{"first try", []Verdict{Success}, StateDelivered},
		{"after retries", []Verdict{Retry, Retry, Success}, StateDelivered},
		{"permanent", []Verdict{Retry, Permanent}, StateDeadLettered},
		{"gone", []Verdict{Disable}, StateDisabled},
		{"expired batch", []Verdict{Retry, Expire}, StateExpired},
		{"attempts run out", []Verdict{Retry, Retry, Retry, Retry, Retry}, StateDeadLettered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			var observed int
			res, err := TestPolicy().Run(context.Background(), Job{
				ID: "msg_1",
				Attempt: func(ctx context.Context) Outcome {
					if _, ok := ctx.Deadline(); !ok {
						t.Error("attempt without a deadline")
					}
					v := tc.verdicts[n]
					n++
					if v == Success {
						return Outcome{Verdict: v, StatusCode: 200}
					}
					return Outcome{Verdict: v, StatusCode: 500, Err: errors.New("no")}
				},
				Observe: func(Attempt) { observed++ },
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.State != tc.state || len(res.Attempts) != len(tc.verdicts) || observed != len(tc.verdicts) || res.DeliveryID != "msg_1" {
				t.Fatalf("result %+v, observed %d", res, observed)
			}
			if tc.state != StateDelivered && res.Reason == "" {
				t.Error("no reason given")
			}
		})
	}
}

func TestIDStableAndDistinct(t *testing.T) {
	if ID("ops", "e1") != ID("ops", "e1") {
		t.Fatal("ID not deterministic")
	}
	if ID("ops", "e1") == ID("ops", "e2") || ID("ops", "e1") == ID("dev", "e1") || ID("a/b", "c") == ID("a", "b/c") {
		t.Fatal("ID collides")
	}
}
