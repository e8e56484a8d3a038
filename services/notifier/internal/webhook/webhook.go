// Package webhook delivers events to subscribers' HTTP endpoints: a JSON
// POST signed the Standard Webhooks way (https://www.standardwebhooks.com),
// retried with backoff, through a client that cannot be pointed at the
// cluster's own network (see package egress).
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/egress"
)

// Config configures a Sender.
type Config struct {
	// Retry bounds attempts; zero fields take delivery.DefaultPolicy's.
	Retry delivery.Policy
	// Egress says which addresses webhooks may reach.
	Egress egress.Policy
	// UserAgent is sent with every request; "" means "hivemind-notifier".
	UserAgent string
	// TLS, if set, configures HTTPS (for example extra roots).
	TLS *tls.Config
}

// Target is where and how a subscription's webhooks go.
type Target struct {
	URL string
	// Secret signs every request; "whsec_<base64>" or any other string.
	Secret string
	// Opaque is the subscription's string, passed along untouched.
	Opaque string
	// Capability is the capability the receiver requires, sent along.
	Capability string
}

// Request is one event to deliver to one subscription.
type Request struct {
	// DeliveryID is sent as webhook-id; "" means
	// delivery.ID(Subscription, Event.ID).
	DeliveryID   string
	Subscription string
	Target       Target
	Event        delivery.Event
	// Since is when the delivery began (see delivery.Job); zero is now.
	Since time.Time
}

// Body is the JSON a receiver gets.
type Body struct {
	// Name is the subscription's name.
	Name string `json:"name"`
	// What happened: created, updated, deleted or queried.
	What       string    `json:"what"`
	URI        string    `json:"uri"`
	DeliveryID string    `json:"delivery_id"`
	EventID    string    `json:"event_id"`
	Revision   int64     `json:"revision"`
	Type       string    `json:"type"`
	Source     string    `json:"source,omitempty"`
	Time       time.Time `json:"time"`
	// Payload is the event's payload when it is JSON; otherwise it is in
	// PayloadBase64.
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payload_base64,omitempty"`
	Opaque        string          `json:"opaque,omitempty"`
	Capability    string          `json:"capability,omitempty"`
}

// Sender delivers webhooks. It is safe for concurrent use.
type Sender struct {
	client    *http.Client
	retry     delivery.Policy
	userAgent string
}

// New returns a Sender whose connections pass cfg.Egress.
func New(cfg Config) *Sender {
	dialer := cfg.Egress.Dialer()
	dialer.KeepAlive = 30 * time.Second
	transport := &http.Transport{
		// No proxy: the guard checks the address dialled, and a proxy
		// would dial the real destination out of its sight.
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       cfg.TLS,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "hivemind-notifier"
	}
	return &Sender{
		client: &http.Client{
			Transport: transport,
			// A redirect could lead anywhere, and following it would
			// send the signed body to a place nobody subscribed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		retry:     cfg.Retry,
		userAgent: ua,
	}
}

// Close releases idle connections.
func (s *Sender) Close() { s.client.CloseIdleConnections() }

// ValidateURL checks a webhook URL as a subscription is created: absolute
// http or https with a host, no user information.
func ValidateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("webhook url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("webhook url: scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return errors.New("webhook url: no host")
	}
	if u.User != nil {
		return errors.New("webhook url: must not carry user information")
	}
	return nil
}

// Deliver sends req until the receiver accepts it or the delivery reaches
// another final state, calling observe (if not nil) after every attempt.
// The error is non-nil only when ctx ended first (delivery.ErrInterrupted).
func (s *Sender) Deliver(ctx context.Context, req Request, observe func(delivery.Attempt)) (delivery.Result, error) {
	id := req.DeliveryID
	if id == "" {
		id = delivery.ID(req.Subscription, req.Event.ID)
	}
	job := delivery.Job{ID: id, Since: req.Since, Expired: req.Event.Expired, Observe: observe}
	body, key, err := prepare(id, req)
	if err != nil {
		// Still through the loop, so an expired event is reported as
		// expired and the refusal is recorded as an attempt.
		job.Attempt = func(context.Context) delivery.Outcome {
			return delivery.Outcome{Verdict: delivery.Permanent, Err: err}
		}
	} else {
		job.Attempt = func(ctx context.Context) delivery.Outcome {
			return s.attempt(ctx, req.Target.URL, id, key, body)
		}
	}
	return s.retry.Run(ctx, job)
}

// prepare checks what cannot change between attempts and makes the body.
func prepare(id string, req Request) (body, key []byte, err error) {
	if err := ValidateURL(req.Target.URL); err != nil {
		return nil, nil, err
	}
	if key, err = ParseSecret(req.Target.Secret); err != nil {
		return nil, nil, err
	}
	if body, err = json.Marshal(newBody(id, req)); err != nil {
		return nil, nil, fmt.Errorf("encode body: %w", err)
	}
	return body, key, nil
}

func newBody(id string, req Request) Body {
	ev := req.Event
	b := Body{
		Name:       req.Subscription,
		What:       ev.Hook.What(),
		URI:        ev.URI,
		DeliveryID: id,
		EventID:    ev.ID,
		Revision:   ev.Revision,
		Type:       ev.Type,
		Source:     ev.Source,
		Time:       ev.Time.UTC(),
		Opaque:     req.Target.Opaque,
		Capability: req.Target.Capability,
	}
	switch {
	case len(ev.Payload) == 0:
	case json.Valid(ev.Payload):
		b.Payload = json.RawMessage(ev.Payload)
	default:
		b.PayloadBase64 = ev.Payload
	}
	return b
}

// attempt makes one POST and judges the answer.
func (s *Sender) attempt(ctx context.Context, target, id string, key, body []byte) delivery.Outcome {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return delivery.Outcome{Verdict: delivery.Permanent, Err: err}
	}
	ts := time.Now().Unix()
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", s.userAgent)
	hreq.Header.Set("webhook-id", id)
	hreq.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	hreq.Header.Set("webhook-signature", signature(key, id, ts, body))

	resp, err := s.client.Do(hreq)
	if err != nil {
		if errors.Is(err, egress.ErrForbidden) {
			return delivery.Outcome{Verdict: delivery.Permanent, Err: err}
		}
		return delivery.Outcome{Verdict: delivery.Retry, Err: err}
	}
	defer resp.Body.Close()
	// Read a little of the answer: a snippet explains a refusal, and a
	// drained body lets the connection be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return judge(resp, snippet)
}

// judge maps an HTTP answer to a verdict.
func judge(resp *http.Response, snippet []byte) delivery.Outcome {
	code := resp.StatusCode
	out := delivery.Outcome{StatusCode: code}
	if code >= 200 && code < 300 {
		out.Verdict = delivery.Success
		return out
	}
	out.Err = &StatusError{Code: code, Body: strings.TrimSpace(string(snippet))}
	switch {
	case code == http.StatusGone:
		out.Verdict = delivery.Disable
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		out.Verdict = delivery.Retry
		out.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	default:
		// Other 4xx, and 3xx because redirects are not followed.
		out.Verdict = delivery.Permanent
	}
	return out
}

// StatusError is a receiver's answer other than 2xx.
type StatusError struct {
	Code int
	Body string // the start of the answer's body
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("receiver answered %d %s", e.Code, http.StatusText(e.Code))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
// Anything else, or a time already past, gives 0.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(365*24*time.Hour/time.Second) {
			secs = int64(365 * 24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}
