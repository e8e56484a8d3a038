package mail

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

// selfSigned makes a certificate for 127.0.0.1 and localhost, and a pool
// that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test relay"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, pool
}

// mailbox is a real SMTP server (go-smtp) that keeps what it receives.
type mailbox struct {
	addr string
	mu   sync.Mutex
	msgs []received
	// reject, if set, may refuse a message (n from 1) at DATA.
	reject func(n int) error
	tries  int
}

type received struct {
	from   string
	to     []string
	data   []byte
	authed bool
	tls    bool
}

type relayOptions struct {
	tls  bool   // offer STARTTLS
	user string // require AUTH PLAIN with user/pass
	pass string
}

func newMailbox(t *testing.T, o relayOptions) (*mailbox, *x509.CertPool) {
	t.Helper()
	mb := &mailbox{}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{mb: mb, conn: c, opts: o}, nil
	})
	s := smtp.NewServer(be)
	s.Domain = "relay.test"
	s.ReadTimeout = 10 * time.Second
	s.WriteTimeout = 10 * time.Second
	var pool *x509.CertPool
	if o.tls {
		var cert tls.Certificate
		cert, pool = selfSigned(t)
		s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mb.addr = ln.Addr().String()
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return mb, pool
}

func (mb *mailbox) messages() []received {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	return append([]received(nil), mb.msgs...)
}

type session struct {
	mb     *mailbox
	conn   *smtp.Conn
	opts   relayOptions
	authed bool
	from   string
	to     []string
}

func (s *session) AuthMechanisms() []string {
	if s.opts.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != s.opts.user || pass != s.opts.pass {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.opts.user != "" && !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.mb.mu.Lock()
	defer s.mb.mu.Unlock()
	s.mb.tries++
	if s.mb.reject != nil {
		if err := s.mb.reject(s.mb.tries); err != nil {
			return err
		}
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.mb.msgs = append(s.mb.msgs, received{from: s.from, to: s.to, data: data, authed: s.authed, tls: isTLS})
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }

func event(typ, name string) delivery.Event {
	return delivery.Event{
		ID:       "ev-" + typ + "-" + name,
		Revision: 7,
		Type:     typ,
		Hook:     delivery.HookModify,
		URI:      "/members/" + name,
		Source:   "cp-1",
		Time:     time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Payload:  []byte(`{"name":"` + name + `","state":"x"}`),
	}
}

func addrs(t *testing.T, target string) []*mail.Address {
	t.Helper()
	a, err := ParseTarget(target)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sender(t *testing.T, cfg Config) *Sender {
	t.Helper()
	if cfg.From == "" {
		cfg.From = "Hivemind <hivemind@example.com>"
	}
	if cfg.Retry == (delivery.Policy{}) {
		cfg.Retry = delivery.TestPolicy()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func parse(t *testing.T, data []byte) (*mail.Message, string) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("relay got an unparsable message: %v\n%s", err, data)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(m.Body))
	if err != nil {
		t.Fatal(err)
	}
	return m, string(body)
}

func TestSendOverSTARTTLSWithAuth(t *testing.T) {
	mb, pool := newMailbox(t, relayOptions{tls: true, user: "notifier", pass: "s3cret"})
	s := sender(t, Config{Relay: mb.addr, TLSConfig: &tls.Config{RootCAs: pool}, Username: "notifier", Password: "s3cret"})
	var observed []delivery.Attempt
	res, err := s.Deliver(context.Background(), Message{
		Subscription: "ops",
		To:           addrs(t, "mailto:oncall@example.com,Boss%20Person%20%3Cboss@example.com%3E"),
		Events:       []delivery.Event{event("member.failed", "web-1")},
		Opaque:       "team=ops",
	}, func(a delivery.Attempt) { observed = append(observed, a) })
	if err != nil || res.State != delivery.StateDelivered || len(observed) != 1 {
		t.Fatalf("result %+v, %v", res, err)
	}
	got := mb.messages()
	if len(got) != 1 {
		t.Fatalf("relay got %d messages", len(got))
	}
	r := got[0]
	if !r.tls || !r.authed {
		t.Errorf("tls %v, authenticated %v; want both", r.tls, r.authed)
	}
	if r.from != "hivemind@example.com" || strings.Join(r.to, ",") != "oncall@example.com,boss@example.com" {
		t.Errorf("envelope from %q to %v", r.from, r.to)
	}
	m, body := parse(t, r.data)
	wantID := "<" + delivery.ID("ops", "ev-member.failed-web-1") + "@example.com>"
	for k, want := range map[string]string{
		"Subject":           "[hivemind] web-1 is down",
		"Message-Id":        wantID,
		"From":              `"Hivemind" <hivemind@example.com>`,
		"X-Hivemind-Opaque": "team=ops",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if to, err := m.Header.AddressList("To"); err != nil || len(to) != 2 || to[1].Name != "Boss Person" {
		t.Errorf("To: %v, %v", to, err)
	}
	if d, err := m.Header.Date(); err != nil || time.Since(d) > time.Minute {
		t.Errorf("Date: %v, %v", d, err)
	}
	for _, want := range []string{"web-1 is down.", "member.failed", "/members/web-1", `"name": "web-1"`} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
}

func TestWrongPasswordIsPermanent(t *testing.T) {
	mb, pool := newMailbox(t, relayOptions{tls: true, user: "notifier", pass: "s3cret"})
	s := sender(t, Config{Relay: mb.addr, TLSConfig: &tls.Config{RootCAs: pool}, Username: "notifier", Password: "wrong"})
	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1")}}, nil)
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 1 || res.Attempts[0].StatusCode != 535 {
		t.Fatalf("result %+v", res)
	}
}

func TestTLSRequiredRefusesPlainRelay(t *testing.T) {
	mb, _ := newMailbox(t, relayOptions{})
	p := delivery.TestPolicy()
	p.MaxAttempts = 2
	s := sender(t, Config{Relay: mb.addr, Retry: p})
	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1")}}, nil)
	if res.State != delivery.StateDeadLettered || len(mb.messages()) != 0 {
		t.Fatalf("result %+v; relay got %d", res, len(mb.messages()))
	}
	if !strings.Contains(res.Reason, "STARTTLS") {
		t.Errorf("reason %q", res.Reason)
	}
}

func TestTLSRequiredVerifiesCertificate(t *testing.T) {
	mb, _ := newMailbox(t, relayOptions{tls: true})
	p := delivery.TestPolicy()
	p.MaxAttempts = 1
	s := sender(t, Config{Relay: mb.addr, Retry: p}) // system roots do not trust the test's certificate
	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1")}}, nil)
	if res.State != delivery.StateDeadLettered || len(mb.messages()) != 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestOpportunisticTLS(t *testing.T) {
	plain, _ := newMailbox(t, relayOptions{})
	withTLS, pool := newMailbox(t, relayOptions{tls: true})
	for _, tc := range []struct {
		mb      *mailbox
		wantTLS bool
	}{{plain, false}, {withTLS, true}} {
		s := sender(t, Config{Relay: tc.mb.addr, TLS: TLSOpportunistic, TLSConfig: &tls.Config{RootCAs: pool}})
		res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.alive", "web-1")}}, nil)
		got := tc.mb.messages()
		if res.State != delivery.StateDelivered || len(got) != 1 || got[0].tls != tc.wantTLS {
			t.Fatalf("result %+v, messages %d", res, len(got))
		}
		if m, _ := parse(t, got[0].data); m.Header.Get("Subject") != "[hivemind] web-1 is up again" {
			t.Errorf("Subject %q", m.Header.Get("Subject"))
		}
	}
}

func TestNoCredentialsWithoutTLS(t *testing.T) {
	mb, _ := newMailbox(t, relayOptions{user: "u", pass: "p"})
	s := sender(t, Config{Relay: mb.addr, TLS: TLSOff, Username: "u", Password: "p"})
	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1")}}, nil)
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 1 || !strings.Contains(res.Reason, "without TLS") {
		t.Fatalf("result %+v", res)
	}
}

func TestTemporaryRejectRetriedSameMessageID(t *testing.T) {
	mb, _ := newMailbox(t, relayOptions{})
	mb.reject = func(n int) error {
		if n <= 2 {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}
	s := sender(t, Config{Relay: mb.addr, TLS: TLSOff})
	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1")}}, nil)
	if res.State != delivery.StateDelivered || len(res.Attempts) != 3 || res.Attempts[0].StatusCode != 451 {
		t.Fatalf("result %+v", res)
	}
}

func TestPermanentRejectDeadLetters(t *testing.T) {
	mb, _ := newMailbox(t, relayOptions{})
	mb.reject = func(int) error {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no thanks"}
	}
	s := sender(t, Config{Relay: mb.addr, TLS: TLSOff})
	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1")}}, nil)
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 1 || res.Attempts[0].StatusCode != 554 {
		t.Fatalf("result %+v", res)
	}
}

func TestSilentRelayTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept() // accept, never greet
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	}()
	p := delivery.TestPolicy()
	p.AttemptTimeout = 100 * time.Millisecond
	p.MaxAttempts = 2
	s := sender(t, Config{Relay: ln.Addr().String(), TLS: TLSOff, Retry: p})
	start := time.Now()
	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1")}}, nil)
	if res.State != delivery.StateDeadLettered || len(res.Attempts) != 2 {
		t.Fatalf("result %+v", res)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v with 100ms attempts", took)
	}
}

func TestExpiredEventsLeftOut(t *testing.T) {
	mb, _ := newMailbox(t, relayOptions{})
	s := sender(t, Config{Relay: mb.addr, TLS: TLSOff})
	old := event("member.failed", "web-2")
	old.TTL.ExpiresAt = time.Now().Add(-time.Second)

	res, _ := s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{old}}, nil)
	if res.State != delivery.StateExpired || len(res.Attempts) != 1 || len(mb.messages()) != 0 {
		t.Fatalf("only event expired: %+v", res)
	}

	res, _ = s.Deliver(context.Background(), Message{Subscription: "ops", To: addrs(t, "mailto:a@example.com"), Events: []delivery.Event{event("member.failed", "web-1"), old}}, nil)
	if res.State != delivery.StateDelivered || len(res.Expired) != 1 || res.Expired[0] != old.ID {
		t.Fatalf("batch with an expired event: %+v", res)
	}
	if m, _ := parse(t, mb.messages()[0].data); m.Header.Get("Subject") != "[hivemind] web-1 is down" {
		t.Errorf("Subject %q", m.Header.Get("Subject"))
	}
}

func TestBatchedPerWindow(t *testing.T) {
	mb, _ := newMailbox(t, relayOptions{})
	s := sender(t, Config{Relay: mb.addr, TLS: TLSOff})
	to := addrs(t, "mailto:a@example.com")
	var mu sync.Mutex
	results := map[string]delivery.Result{}
	b := delivery.NewBatcher(100*time.Millisecond, 0, func(sub string, evs []delivery.Event) {
		res, err := s.Deliver(context.Background(), Message{Subscription: sub, To: to, Events: evs}, nil)
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		results[sub] = res
		mu.Unlock()
	})
	for _, name := range []string{"web-1", "web-2", "web-3", "web-4"} {
		b.Add("ops", event("member.failed", name))
	}
	b.Add("ops", event("member.alive", "web-1"))
	b.Add("dev", event("kv.put", "config"))
	b.Close()

	got := mb.messages()
	if len(got) != 2 || len(results) != 2 {
		t.Fatalf("relay got %d messages, %d results; want one per subscription", len(got), len(results))
	}
	subjects := map[string]string{}
	for _, r := range got {
		m, body := parse(t, r.data)
		subjects[m.Header.Get("X-Hivemind-Subscription")] = m.Header.Get("Subject")
		if m.Header.Get("X-Hivemind-Subscription") == "ops" && !strings.Contains(body, "web-1 is up again") {
			t.Errorf("batch body lacks the last event:\n%s", body)
		}
	}
	if want := "[hivemind] 5 changes: web-1 is down, web-2 is down, web-3 is down, and 2 more"; subjects["ops"] != want {
		t.Errorf("ops subject %q, want %q", subjects["ops"], want)
	}
	if want := "[hivemind] kv.put: /members/config updated"; subjects["dev"] != want {
		t.Errorf("dev subject %q, want %q", subjects["dev"], want)
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "mailto:a@example.com", want: []string{"a@example.com"}},
		{in: "MAILTO:a@example.com,b@example.org", want: []string{"a@example.com", "b@example.org"}},
		{in: "mailto:a@example.com?cc=c@example.com&to=d@example.com", want: []string{"a@example.com", "c@example.com", "d@example.com"}},
		{in: "mailto:?to=a@example.com", want: []string{"a@example.com"}},
		{in: "mailto:Ops%20Team%20%3Cops@example.com%3E", want: []string{"ops@example.com"}},
		{in: "mailto:a@example.com,A@example.com", want: []string{"a@example.com"}},
		{in: "mailto:", err: true},
		{in: "mailto:not-an-address", err: true},
		{in: "mailto:a@example.com?subject=hi", err: true},
		{in: "mailto:a@example.com%0d%0aBcc:x@evil.example", err: true},
		{in: "http://example.com", err: true},
		{in: "mailto:" + manyAddresses(MaxRecipients+1), err: true},
	} {
		got, err := ParseTarget(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("ParseTarget(%q) = %v, want an error", tc.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTarget(%q): %v", tc.in, err)
			continue
		}
		var addrs []string
		for _, a := range got {
			addrs = append(addrs, a.Address)
		}
		if strings.Join(addrs, " ") != strings.Join(tc.want, " ") {
			t.Errorf("ParseTarget(%q) = %v, want %v", tc.in, addrs, tc.want)
		}
	}
}

func TestSummary(t *testing.T) {
	fromURI := event("member.failed", "db-1")
	fromURI.Payload = nil
	nested := event("member.left", "x")
	nested.Payload = []byte(`{"type":"member.left","member":{"name":"cache-3"}}`)
	for _, tc := range []struct {
		ev   delivery.Event
		want string
	}{
		{event("member.failed", "web-1"), "web-1 is down"},
		{event("member.alive", "web-1"), "web-1 is up again"},
		{event("member.joined", "web-9"), "web-9 joined the cluster"},
		{fromURI, "db-1 is down"},
		{nested, "cache-3 left the cluster"},
		{delivery.Event{Type: "kv.put", Hook: delivery.HookCreate, URI: "/app/web"}, "kv.put: /app/web created"},
	} {
		if got := Summary(tc.ev); got != tc.want {
			t.Errorf("Summary(%s %s) = %q, want %q", tc.ev.Type, tc.ev.URI, got, tc.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Relay: "no-port", From: "a@example.com"},
		{Relay: "relay:25", From: "not an address"},
		{Relay: "relay:25", From: "a@example.com", TLS: "sometimes"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

func manyAddresses(n int) string {
	list := make([]string, n)
	for i := range list {
		list[i] = fmt.Sprintf("user%d@example.com", i)
	}
	return strings.Join(list, ",")
}
