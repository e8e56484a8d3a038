package main

import (
	"net"
	"net/smtp"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/hivemind/hivemind/test/sink/record"
)

// TestSinkRecords sends a mail with the standard library's client and
// checks what the sink recorded, the MIME-encoded subject decoded.
func TestSinkRecords(t *testing.T) {
	var got record.Log[message]
	srv := gosmtp.NewServer(backend{log: &got})
	srv.Domain, srv.AllowInsecureAuth = "test", true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })

	msg := "From: a@x\r\nTo: b@y\r\nMessage-Id: <m1@x>\r\nSubject: =?utf-8?q?web-1_is_down_=E2=9C=97?=\r\n\r\nhello\r\n"
	if err := smtp.SendMail(ln.Addr().String(), nil, "a@x", []string{"b@y", "c@y"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(got.Items()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	items := got.Items()
	if len(items) != 1 {
		t.Fatalf("%d messages recorded, want 1", len(items))
	}
	m := items[0]
	if m.MessageID != "<m1@x>" || m.Subject != "web-1 is down ✗" || m.From != "a@x" || len(m.To) != 2 || !strings.Contains(m.Body, "hello") {
		t.Errorf("recorded %+v", m)
	}
}
