package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/egress"
)

// testSecret is a Standard Webhooks secret: "whsec_" and base64 of the key.
const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// verify checks a request the way a receiver following the Standard
// Webhooks specification would, written apart from the package's signer.
func verify(t *testing.T, secret string, h http.Header, body []byte) error {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("timestamp %q: %v", ts, err)
	}
	if d := time.Since(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("timestamp %d too far from now", sec)
	}
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, id+"."+ts+"."+string(body))
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, b64, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("no valid v1 signature in %q", sigs)
}

// received is one request that reached the test receiver.
type received struct {
	at     time.Time
	header http.Header
	body   []byte
}

// receiver is a real HTTP server whose answers a test scripts.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	answer func(n int, w http.ResponseWriter, r *http.Request) // n from 1
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{at: time.Now(), header: r.Header.Clone(), body: body})
		n := len(rc.got)
		rc.mu.Unlock()
		if rc.answer != nil {
			rc.answer(n, w, r)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func status(code int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// local is the configuration of a notifier beside its receivers.
func local(retry delivery.Policy) Config {
	return Config{Retry: retry, Egress: egress.Policy{AllowLoopback: true}}
}

func testEvent() delivery.Event {
	return delivery.Event{
		ID:       "0190f5a2-0001",
		Revision: 42,
		Type:     "member.failed",
		Hook:     delivery.HookModify,
		URI:      "/members/web-1",
		Source:   "cp-1",
		Time:     time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Payload:  []byte(`{"name":"web-1","state":"failed"}`),
	}
}

func request(url string) Request {
	return Request{
		Subscription: "ops",
		Target:       Target{URL: url, Secret: testSecret, Opaque: "team=ops", Capability: "alerts.read"},
		Event:        testEvent(),
	}
}

func deliver(t *testing.T, cfg Config, req Request) (delivery.Result, []delivery.Attempt) {
	t.Helper()
	s := New(cfg)
	defer s.Close()
	var mu sync.Mutex
	var seen []delivery.Attempt
	res, err := s.Deliver(context.Background(), req, func(a delivery.Attempt) {
		mu.Lock()
		seen = append(seen, a)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	return res, seen
}

func TestDeliverSignedJSON(t *testing.T) {
	rc := newReceiver(t, status(http.StatusNoContent))
	res, seen := deliver(t, local(delivery.TestPolicy()), request(rc.URL+"/hook"))
	if res.State != delivery.StateDelivered || len(res.Attempts) != 1 || len(seen) != 1 {
		t.Fatalf("result %+v, observed %d attempts; want delivered after 1", res, len(seen))
	}
	if a := res.Attempts[0]; a.StatusCode != 204 || a.Err != nil || a.Latency <= 0 {
		t.Errorf("attempt %+v", a)
	}
	got := rc.requests()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests", len(got))
	}
	r := got[0]
	if err := verify(t, testSecret, r.header, r.body); err != nil {
		t.Fatalf("signature: %v", err)
	}
	wantID := delivery.ID("ops", "0190f5a2-0001")
	if r.header.Get("webhook-id") != wantID || res.DeliveryID != wantID {
		t.Errorf("webhook-id %q, result id %q, want %q", r.header.Get("webhook-id"), res.DeliveryID, wantID)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"name": "ops", "what": "updated", "uri": "/members/web-1", "delivery_id": wantID,
		"event_id": "0190f5a2-0001", "revision": 42.0, "type": "member.failed", "source": "cp-1",
		"time": "2026-03-01T12:00:00Z", "opaque": "team=ops", "capability": "alerts.read",
	}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("body[%q] = %v, want %v", k, body[k], v)
		}
	}
	if p, _ := body["payload"].(map[string]any); p["name"] != "web-1" {
		t.Errorf("payload %v, want the event's JSON inline", body["payload"])
	}
}

func TestSignatureFailsWithOtherSecret(t *testing.T) {
	rc := newReceiver(t, status(200))
	deliver(t, local(delivery.TestPolicy()), request(rc.URL))
	r := rc.requests()[0]
	if err := verify(t, "whsec_"+base64.StdEncoding.EncodeToString([]byte("another key")), r.header, r.body); err == nil {
		t.Fatal("signature verified with the wrong key")
	}
	tampered := append([]byte(nil), r.body...)
	tampered[len(tampered)-2] ^= 1
	if err := verify(t, testSecret, r.header, tampered); err == nil {
		t.Fatal("signature verified over a changed body")
	}
}

func TestPlainSecretAndBinaryPayload(t *testing.T) {
	rc := newReceiver(t, status(200))
	req := request(rc.URL)
	req.Target.Secret = "not-a-whsec-secret"
	req.Event.Payload = []byte{0xff, 0x00, 'x'}
	if res, _ := deliver(t, local(delivery.TestPolicy()), req); res.State != delivery.StateDelivered {
		t.Fatalf("result %+v", res)
	}
	r := rc.requests()[0]
	mac := hmac.New(sha256.New, []byte("not-a-whsec-secret"))
	io.WriteString(mac, r.header.Get("webhook-id")+"."+r.header.Get("webhook-timestamp")+"."+string(r.body))
	if want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)); r.header.Get("webhook-signature") != want {
		t.Errorf("signature %q, want %q", r.header.Get("webhook-signature"), want)
	}
	var body struct {
		Payload       json.RawMessage `json:"payload"`
		PayloadBase64 string          `json:"payload_base64"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if body.Payload != nil || body.PayloadBase64 != base64.StdEncoding.EncodeToString([]byte{0xff, 0, 'x'}) {
		t.Errorf("payload %s / %q, want only payload_base64", body.Payload, body.PayloadBase64)
	}
}

func TestRetryAfterSecondsHonoured(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	res, _ := deliver(t, local(delivery.TestPolicy()), request(rc.URL))
	if res.State != delivery.StateDelivered || len(res.Attempts) != 2 {
		t.Fatalf("result %+v", res)
	}
	if w := res.Attempts[0].Wait; w != time.Second {
		t.Errorf("wait after the 503 is %v, want the 1s asked for", w)
	}
	got := rc.requests()
	if gap := got[1].at.Sub(got[0].at); gap < time.Second {
		t.Errorf("second attempt %v after the first, before Retry-After", gap)
	}
	if got[0].header.Get("webhook-id") != got[1].header.Get("webhook-id") {
		t.Error("webhook-id changed between attempts")
	}
	for _, r := range got {
		if err := verify(t, testSecret, r.header, r.body); err != nil {
			t.Error(err)
		}
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{"Sun, 01 Mar 2026 12:00:30 GMT", 30 * time.Second},
		{"Sunday, 01-Mar-26 12:01:00 GMT", time.Minute},
		{"Sun Mar  1 12:00:05 2026", 5 * time.Second},
		{"Sun, 01 Mar 2026 11:00:00 GMT", 0},
	} {
		if got := retryAfter(tc.in, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRetryAfterDateHonoured(t *testing.T) {
	rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("Retry-After", time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	res, _ := deliver(t, local(delivery.TestPolicy()), request(rc.URL))
	if res.State != delivery.StateDelivered || len(res.Attempts) != 2 {
		t.Fatalf("result %+v", res)
	}
	// The date has one-second precision, so the wait is between 1 and 2s.
	if w := res.Attempts[0].Wait; w < time.Second || w > 2*time.Second {
		t.Errorf("wait after the 429 is %v, want about 2s", w)
	}
}

func TestGoneDisables(t *testing.T) {
	rc := newReceiver(t, status(http.StatusGone))
	res, _ := deliver(t, local(delivery.TestPolicy()), request(rc.URL))
	if res.State != delivery.StateDisabled || len(res.Attempts) != 1 || res.Attempts[0].StatusCode != 410 {
		t.Fatalf("result %+v, want disabled after one 410", res)
	}
}

func TestClientErrorsArePermanentExcept408And429(t *testing.T) {
	for _, tc := range []struct {
		code     int
		attempts int
	}{
		{400, 1}, {401, 1}, {403, 1}, {404, 1}, {422, 1},
		{408, 3}, {429, 3}, {500, 3}, {502, 3}, {503, 3},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			rc := newReceiver(t, status(tc.code))
			p := delivery.TestPolicy()
			p.MaxAttempts = 3
			res, _ := deliver(t, local(p), request(rc.URL))
			if res.State != delivery.StateDeadLettered || len(res.Attempts) != tc.attempts {
				t.Fatalf("result %+v, want dead-lettered after %d attempts", res, tc.attempts)
			}
			var se *StatusError
			if last := res.Attempts[len(res.Attempts)-1]; !errors.As(last.Err, &se) || se.Code != tc.code {
				t.Errorf("last attempt error %v", last.Err)
			}
			if n := len(rc.requests()); n != tc.attempts {
				t.Errorf("receiver got %d requests", n)
			}
		})
	}
}

func TestServerErrorsRetriedThenDeadLettered(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "database on fire", http.StatusInternalServerError)
	})
	p := delivery.TestPolicy()
	p.MaxAttempts = 4
	res, seen := deliver(t, local(p), request(rc.URL))
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 4 || len(seen) != 4 {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(res.Reason, "database on fire") {
		t.Errorf("reason %q does not carry the receiver's answer", res.Reason)
	}
	for i, a := range res.Attempts {
		if a.Number != i+1 || a.StatusCode != 500 {
			t.Errorf("attempt %d: %+v", i, a)
		}
		if last := i == len(res.Attempts)-1; last != (a.Wait == 0) {
			t.Errorf("attempt %d waits %v", i, a.Wait)
		}
	}
	ids := map[string]bool{}
	for _, r := range rc.requests() {
		ids[r.header.Get("webhook-id")] = true
	}
	if len(ids) != 1 {
		t.Errorf("webhook-ids %v, want one across retries", ids)
	}
}

func TestMaxAgeEndsRetries(t *testing.T) {
	rc := newReceiver(t, status(http.StatusBadGateway))
	p := delivery.Policy{AttemptTimeout: time.Second, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, MaxAge: 300 * time.Millisecond}
	start := time.Now()
	res, _ := deliver(t, local(p), request(rc.URL))
	if res.State != delivery.StateDeadLettered || !strings.Contains(res.Reason, "maximum age") {
		t.Fatalf("result %+v", res)
	}
	if len(res.Attempts) < 2 {
		t.Errorf("only %d attempts in the maximum age", len(res.Attempts))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v, maximum age is 300ms", took)
	}
}

func TestMaxAgeCountsFromSince(t *testing.T) {
	rc := newReceiver(t, status(200))
	req := request(rc.URL)
	req.Since = time.Now().Add(-time.Hour)
	p := delivery.TestPolicy()
	p.MaxAge = time.Minute
	res, _ := deliver(t, local(p), req)
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 0 || len(rc.requests()) != 0 {
		t.Fatalf("result %+v, want dead-lettered without sending", res)
	}
}

func TestRetryAfterBeyondMaxAgeDeadLetters(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	start := time.Now()
	res, _ := deliver(t, local(delivery.TestPolicy()), request(rc.URL))
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 1 {
		t.Fatalf("result %+v", res)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("waited for a Retry-After beyond the maximum age")
	}
}

func TestAttemptTimeout(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	p := delivery.TestPolicy()
	p.AttemptTimeout = 100 * time.Millisecond
	p.MaxAttempts = 2
	res, _ := deliver(t, local(p), request(rc.URL))
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 2 {
		t.Fatalf("result %+v", res)
	}
	for _, a := range res.Attempts {
		if !errors.Is(a.Err, context.DeadlineExceeded) || a.Latency > time.Second {
			t.Errorf("attempt %+v, want a timeout after about 100ms", a)
		}
	}
}

func TestExpiredEventNotSent(t *testing.T) {
	rc := newReceiver(t, status(200))
	req := request(rc.URL)
	req.Event.TTL.ExpiresAt = time.Now().Add(-time.Second)
	res, seen := deliver(t, local(delivery.TestPolicy()), req)
	if res.State != delivery.StateExpired || len(res.Attempts) != 0 || len(seen) != 0 {
		t.Fatalf("result %+v, want expired without attempts", res)
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("receiver got %d requests for an expired event", n)
	}
}

func TestEventExpiringDuringRetries(t *testing.T) {
	rc := newReceiver(t, status(503))
	req := request(rc.URL)
	req.Event.TTL.ExpiresAt = time.Now().Add(150 * time.Millisecond)
	p := delivery.Policy{AttemptTimeout: time.Second, InitialBackoff: 20 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxAge: time.Minute}
	res, _ := deliver(t, local(p), req)
	if res.State != delivery.StateExpired || len(res.Attempts) == 0 {
		t.Fatalf("result %+v, want expired after some attempts", res)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	elsewhere := newReceiver(t, status(200))
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
	})
	res, _ := deliver(t, local(delivery.TestPolicy()), request(rc.URL))
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 1 || res.Attempts[0].StatusCode != 307 {
		t.Fatalf("result %+v, want one 307 counted as a failure", res)
	}
	if n := len(elsewhere.requests()); n != 0 {
		t.Fatalf("redirect followed: target got %d requests", n)
	}
}

func TestLoopbackNameRefusedWithoutAllowance(t *testing.T) {
	rc := newReceiver(t, status(200))
	port := rc.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	url := fmt.Sprintf("http://localhost:%d/hook", port) // a name, resolved at dial time

	res, _ := deliver(t, Config{Retry: delivery.TestPolicy()}, request(url))
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 1 {
		t.Fatalf("result %+v, want one refused attempt", res)
	}
	if err := res.Attempts[0].Err; !errors.Is(err, egress.ErrForbidden) {
		t.Fatalf("attempt error %v, want egress.ErrForbidden", err)
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("receiver got %d requests through the guard", n)
	}

	allowed := Config{Retry: delivery.TestPolicy(), Egress: egress.Policy{Allow: []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"),
	}}}
	if res, _ := deliver(t, allowed, request(url)); res.State != delivery.StateDelivered {
		t.Fatalf("with loopback in the allow list: %+v", res)
	}
}

func TestBadTargetIsPermanent(t *testing.T) {
	for _, tc := range []struct{ name, url, secret string }{
		{"scheme", "ftp://example.com/x", testSecret},
		{"no host", "http:///x", testSecret},
		{"user info", "http://u:p@example.com/", testSecret},
		{"empty secret", "http://example.com/", ""},
		{"bad whsec", "http://example.com/", "whsec_!!!"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(tc.url)
			req.Target.Secret = tc.secret
			res, _ := deliver(t, local(delivery.TestPolicy()), req)
			if res.State != delivery.StateDeadLettered || len(res.Attempts) != 1 {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

func TestInterruptedDeliveryHasNoState(t *testing.T) {
	rc := newReceiver(t, status(503))
	s := New(local(delivery.Policy{InitialBackoff: time.Hour, MaxBackoff: time.Hour, AttemptTimeout: time.Second}))
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := s.Deliver(ctx, request(rc.URL), func(delivery.Attempt) { cancel() })
	if !errors.Is(err, delivery.ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want interrupted", err)
	}
	if res.State != "" || len(res.Attempts) != 1 {
		t.Fatalf("result %+v", res)
	}
}

func TestNewSecretRoundTrips(t *testing.T) {
	s := NewSecret()
	key, err := ParseSecret(s)
	if err != nil || len(key) != 24 || !strings.HasPrefix(s, "whsec_") {
		t.Fatalf("NewSecret %q: key %d bytes, %v", s, len(key), err)
	}
}
