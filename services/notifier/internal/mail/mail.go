// Package mail delivers events by mail through a configured SMTP relay:
// one message per event, or one per batching window and subscription,
// titled the way a monitoring tool titles its alerts ("web-1 is down",
// "web-1 is up again").
//
// Attempts are retried like webhooks (package delivery): a 4xx reply or a
// broken connection is tried again after a backoff, a 5xx reply is final.
// The Message-ID comes from the delivery id, so a message that a replica
// sends again after another one died is recognisably the same.
package mail

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

// TLSMode says whether the connection to the relay is upgraded with
// STARTTLS.
type TLSMode string

// TLS modes.
const (
	// TLSRequired refuses to send unless the relay offers STARTTLS and
	// the handshake (with certificate verification) succeeds.
	TLSRequired TLSMode = "required"
	// TLSOpportunistic uses STARTTLS when the relay offers it.
	TLSOpportunistic TLSMode = "opportunistic"
	// TLSOff never uses STARTTLS (a sink on a trusted network).
	TLSOff TLSMode = "off"
)

// Config configures a Sender.
type Config struct {
	// Relay is the SMTP relay, host:port.
	Relay string
	// TLS is the STARTTLS mode; "" means TLSRequired.
	TLS TLSMode
	// TLSConfig, if set, is used for STARTTLS (for example private
	// roots); ServerName defaults to the relay's host.
	TLSConfig *tls.Config
	// Username and Password, if Username is set, authenticate with PLAIN.
	Username, Password string
	// AllowInsecureAuth sends credentials over a connection without TLS;
	// without it, authentication requires TLS.
	AllowInsecureAuth bool
	// From is the sender, "Hivemind <hivemind@example.com>" or a bare
	// address.
	From string
	// HelloName is the name given in EHLO; "" means "localhost".
	HelloName string
	// Retry bounds attempts; AttemptTimeout bounds one whole SMTP
	// conversation.
	Retry delivery.Policy
}

// Sender sends mail through one relay. It is safe for concurrent use.
type Sender struct {
	cfg    Config
	from   *mail.Address
	host   string
	dialer net.Dialer
}

// New checks cfg and returns a Sender.
func New(cfg Config) (*Sender, error) {
	host, _, err := net.SplitHostPort(cfg.Relay)
	if err != nil || host == "" {
		return nil, fmt.Errorf("mail relay %q: want host:port", cfg.Relay)
	}
	switch cfg.TLS {
	case "":
		cfg.TLS = TLSRequired
	case TLSRequired, TLSOpportunistic, TLSOff:
	default:
		return nil, fmt.Errorf("mail tls mode %q: want required, opportunistic or off", cfg.TLS)
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("mail from %q: %w", cfg.From, err)
	}
	if cfg.HelloName == "" {
		cfg.HelloName = "localhost"
	}
	return &Sender{cfg: cfg, from: from, host: host}, nil
}

// Message is one mail: one event, or a batch for one subscription.
type Message struct {
	// DeliveryID becomes the Message-ID; "" means delivery.ID of the
	// subscription and the event for one event, or BatchID for several.
	DeliveryID   string
	Subscription string
	To           []*mail.Address
	Events       []delivery.Event
	// Opaque and Capability are the subscription's, sent as headers.
	Opaque     string
	Capability string
	// Since is when the delivery began (see delivery.Job); zero is now.
	Since time.Time
}

// BatchID is the delivery id of a batch: it depends only on the
// subscription and the events in it.
func BatchID(subscription string, events []delivery.Event) string {
	id := ""
	for i, ev := range events {
		if i > 0 {
			id += ","
		}
		id += ev.ID
	}
	return delivery.ID(subscription, "batch:"+id)
}

// Deliver sends msg until the relay accepts it or the delivery reaches
// another final state, calling observe (if not nil) after every attempt.
// Events that expire before an attempt are left out of it and listed in
// Result.Expired; when none is left the delivery ends as expired. The
// error is non-nil only when ctx ended first (delivery.ErrInterrupted).
func (s *Sender) Deliver(ctx context.Context, msg Message, observe func(delivery.Attempt)) (delivery.Result, error) {
	id := msg.DeliveryID
	switch {
	case id != "":
	case len(msg.Events) == 1:
		id = delivery.ID(msg.Subscription, msg.Events[0].ID)
	default:
		id = BatchID(msg.Subscription, msg.Events)
	}
	var expired []string
	live := msg.Events
	job := delivery.Job{ID: id, Since: msg.Since, Observe: observe}
	job.Attempt = func(ctx context.Context) delivery.Outcome {
		now := time.Now()
		kept := live[:0:0]
		for _, ev := range live {
			if ev.Expired(now) {
				expired = append(expired, ev.ID)
			} else {
				kept = append(kept, ev)
			}
		}
		live = kept
		if len(live) == 0 {
			return delivery.Outcome{Verdict: delivery.Expire}
		}
		if len(msg.To) == 0 {
			return delivery.Outcome{Verdict: delivery.Permanent, Err: errors.New("no recipients")}
		}
		raw := compose(header{
			From: s.from, To: msg.To, DeliveryID: id, Subscription: msg.Subscription,
			Opaque: msg.Opaque, Capability: msg.Capability, Date: now,
		}, live)
		return s.attempt(ctx, msg.To, raw)
	}
	res, err := s.cfg.Retry.Run(ctx, job)
	res.Expired = expired
	return res, err
}

// attempt is one SMTP conversation.
func (s *Sender) attempt(ctx context.Context, to []*mail.Address, raw []byte) delivery.Outcome {
	c, err := s.connect(ctx)
	if err != nil {
		return judge(err)
	}
	defer c.Close()
	if err := s.send(c, to, raw); err != nil {
		return judge(err)
	}
	_ = c.Quit() // the message is accepted; a failed QUIT changes nothing
	return delivery.Outcome{Verdict: delivery.Success, StatusCode: 250}
}

func (s *Sender) send(c *smtp.Client, to []*mail.Address, raw []byte) error {
	if err := c.Mail(s.from.Address, nil); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	for _, a := range to {
		if err := c.Rcpt(a.Address, nil); err != nil {
			return fmt.Errorf("RCPT TO %s: %w", a.Address, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(raw); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	return nil
}

// connect dials the relay, says hello, upgrades to TLS as configured and
// authenticates. The connection lives no longer than ctx.
func (s *Sender) connect(ctx context.Context) (*smtp.Client, error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return nil, err
	}
	c, err := s.startTLS(ctx, conn)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		c.CommandTimeout = time.Until(d)
		c.SubmissionTimeout = time.Until(d)
	}
	if err := s.auth(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (s *Sender) dial(ctx context.Context) (net.Conn, error) {
	conn, err := s.dialer.DialContext(ctx, "tcp", s.cfg.Relay)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	// Closing the connection is what interrupts a blocked read when the
	// attempt ends early.
	context.AfterFunc(ctx, func() { conn.Close() })
	return conn, nil
}

func (s *Sender) startTLS(ctx context.Context, conn net.Conn) (*smtp.Client, error) {
	tlsConfig := &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}
	if s.cfg.TLSConfig != nil {
		tlsConfig = s.cfg.TLSConfig.Clone()
		if tlsConfig.ServerName == "" {
			tlsConfig.ServerName = s.host
		}
	}
	switch s.cfg.TLS {
	case TLSOff:
		c := smtp.NewClient(conn)
		return c, hello(c, s.cfg.HelloName)
	case TLSOpportunistic:
		// go-smtp upgrades only while creating a client, so ask what the
		// relay offers first and, if it offers STARTTLS, start again.
		c := smtp.NewClient(conn)
		if err := hello(c, s.cfg.HelloName); err != nil {
			return nil, err
		}
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return c, nil
		}
		_ = c.Quit()
		c.Close()
		if conn, err := s.dial(ctx); err != nil {
			return nil, err
		} else if c, err = smtp.NewClientStartTLS(conn, tlsConfig); err != nil {
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
		return c, hello(c, s.cfg.HelloName)
	default:
		c, err := smtp.NewClientStartTLS(conn, tlsConfig)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("STARTTLS required: %w", err)
		}
		return c, hello(c, s.cfg.HelloName)
	}
}

func hello(c *smtp.Client, name string) error {
	if err := c.Hello(name); err != nil {
		c.Close()
		return fmt.Errorf("EHLO: %w", err)
	}
	return nil
}

func (s *Sender) auth(c *smtp.Client) error {
	if s.cfg.Username == "" {
		return nil
	}
	if _, isTLS := c.TLSConnectionState(); !isTLS && !s.cfg.AllowInsecureAuth {
		return errPermanent{errors.New("refusing to send credentials without TLS (set TLS to required, or allow insecure auth)")}
	}
	if !c.SupportsAuth(sasl.Plain) {
		return errPermanent{errors.New("relay does not offer AUTH PLAIN")}
	}
	if err := c.Auth(sasl.NewPlainClient("", s.cfg.Username, s.cfg.Password)); err != nil {
		return fmt.Errorf("AUTH: %w", err)
	}
	return nil
}

// errPermanent marks a failure that retrying cannot mend.
type errPermanent struct{ error }

func (e errPermanent) Unwrap() error { return e.error }

// judge maps an SMTP failure to a verdict: 5xx replies and configuration
// mismatches are final, 4xx replies and network failures are retried.
func judge(err error) delivery.Outcome {
	var perm errPermanent
	if errors.As(err, &perm) {
		return delivery.Outcome{Verdict: delivery.Permanent, Err: err}
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		out := delivery.Outcome{StatusCode: se.Code, Err: err, Verdict: delivery.Retry}
		if se.Code >= 500 {
			out.Verdict = delivery.Permanent
		}
		return out
	}
	return delivery.Outcome{Verdict: delivery.Retry, Err: err}
}
