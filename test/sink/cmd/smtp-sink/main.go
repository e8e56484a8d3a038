// Command smtp-sink is an SMTP server for end-to-end tests: it accepts
// every message (no TLS, no authentication), and lists what it received at
// GET /received on its HTTP port:
//
//	[{"message_id":"<…>","from":"…","to":["…"],"subject":"…",
//	  "body":"…","received_at":"…"}, …]
package main

import (
	"bytes"
	"flag"
	"io"
	"log"
	"mime"
	"net/http"
	"net/mail"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/hivemind/hivemind/test/sink/record"
)

// message is one mail as received.
type message struct {
	MessageID string    `json:"message_id"`
	From      string    `json:"from"`
	To        []string  `json:"to"`
	Subject   string    `json:"subject"`
	Body      string    `json:"body"`
	Received  time.Time `json:"received_at"`
}

// backend hands every connection a session that records into log.
type backend struct{ log *record.Log[message] }

func (b backend) NewSession(*smtp.Conn) (smtp.Session, error) { return &session{log: b.log}, nil }

// session collects one transaction's envelope and data.
type session struct {
	log  *record.Log[message]
	from string
	to   []string
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = append(s.to, to); return nil }
func (s *session) Reset()                                      { s.from, s.to = "", nil }
func (s *session) Logout() error                               { return nil }

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := message{From: s.from, To: s.to, Received: time.Now().UTC()}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		m.Body = string(raw)
	} else {
		dec := new(mime.WordDecoder)
		m.MessageID = msg.Header.Get("Message-Id")
		if m.Subject, err = dec.DecodeHeader(msg.Header.Get("Subject")); err != nil {
			m.Subject = msg.Header.Get("Subject")
		}
		body, _ := io.ReadAll(io.LimitReader(msg.Body, 64<<10))
		m.Body = string(body)
	}
	s.log.Add(m)
	return nil
}

func main() {
	smtpAddr := flag.String("smtp-listen", ":2525", "SMTP address")
	httpAddr := flag.String("http-listen", ":8080", "HTTP address of GET /received")
	flag.Parse()
	var received record.Log[message]
	srv := smtp.NewServer(backend{log: &received})
	srv.Addr, srv.Domain = *smtpAddr, "smtp-sink"
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	srv.MaxMessageBytes = 1 << 20
	go func() {
		log.Printf("smtp-sink: SMTP on %s", *smtpAddr)
		log.Fatal(srv.ListenAndServe())
	}()
	mux := http.NewServeMux()
	mux.Handle("GET /received", &received)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	log.Printf("smtp-sink: HTTP on %s", *httpAddr)
	hs := &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(hs.ListenAndServe())
}
