package mail

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"path"
	"strings"
	"time"

	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
)

// subjectPrefix starts every subject, so mail rules can sort the alerts.
const subjectPrefix = "[hivemind] "

// Summary says in a few words what an event means, the way a monitoring
// tool titles an alert: "web-1 is down", "web-1 is up again", or for events
// without a phrase of their own "kv.put: /app/web updated".
func Summary(ev delivery.Event) string {
	name := memberName(ev)
	switch ev.Type {
	case "member.failed":
		return name + " is down"
	case "member.alive":
		return name + " is up again"
	case "member.suspect":
		return name + " is suspected down"
	case "member.joined":
		return name + " joined the cluster"
	case "member.left":
		return name + " left the cluster"
	}
	s := ev.Type + ": " + ev.URI
	if w := ev.Hook.What(); w != "" {
		s += " " + w
	}
	return s
}

// memberName finds the member an event is about: the payload's name (a
// member or a member event in JSON), else the last element of its path,
// else the node that reported it.
func memberName(ev delivery.Event) string {
	var p struct {
		Name   string `json:"name"`
		Member struct {
			Name string `json:"name"`
		} `json:"member"`
	}
	if json.Unmarshal(ev.Payload, &p) == nil {
		if p.Name != "" {
			return p.Name
		}
		if p.Member.Name != "" {
			return p.Member.Name
		}
	}
	if b := path.Base(ev.URI); ev.URI != "" && b != "/" && b != "." {
		return b
	}
	if ev.Source != "" {
		return ev.Source
	}
	return "a member"
}

// Subject is the subject of a message about events (at least one).
func Subject(events []delivery.Event) string {
	if len(events) == 1 {
		return subjectPrefix + Summary(events[0])
	}
	const shown = 3
	parts := make([]string, 0, shown+1)
	for i, ev := range events {
		if i == shown {
			parts = append(parts, fmt.Sprintf("and %d more", len(events)-shown))
			break
		}
		parts = append(parts, Summary(ev))
	}
	return fmt.Sprintf("%s%d changes: %s", subjectPrefix, len(events), strings.Join(parts, ", "))
}

// header is everything besides the events that a message carries.
type header struct {
	From         *mail.Address
	To           []*mail.Address
	DeliveryID   string
	Subscription string
	Opaque       string
	Capability   string
	Date         time.Time
}

// compose writes a whole RFC 5322 message, CRLF line endings, body in
// quoted-printable UTF-8 so no line is too long for a relay.
func compose(h header, events []delivery.Event) []byte {
	var b bytes.Buffer
	field := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	field("From", h.From.String())
	to := make([]string, len(h.To))
	for i, a := range h.To {
		to[i] = a.String()
	}
	field("To", strings.Join(to, ", "))
	field("Subject", mime.QEncoding.Encode("utf-8", Subject(events)))
	field("Date", h.Date.Format(time.RFC1123Z))
	field("Message-ID", messageID(h.DeliveryID, h.From))
	field("MIME-Version", "1.0")
	field("Content-Type", `text/plain; charset="utf-8"`)
	field("Content-Transfer-Encoding", "quoted-printable")
	field("Auto-Submitted", "auto-generated")
	field("X-Hivemind-Delivery", h.DeliveryID)
	field("X-Hivemind-Subscription", mime.QEncoding.Encode("utf-8", h.Subscription))
	if h.Opaque != "" {
		field("X-Hivemind-Opaque", mime.QEncoding.Encode("utf-8", oneLine(h.Opaque)))
	}
	if h.Capability != "" {
		field("X-Hivemind-Capability", mime.QEncoding.Encode("utf-8", oneLine(h.Capability)))
	}
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write(body(h, events))
	_ = qp.Close()
	return b.Bytes()
}

// messageID derives the Message-ID from the delivery id, so a message sent
// again by another replica or attempt can be recognised as the same.
func messageID(deliveryID string, from *mail.Address) string {
	domain := "hivemind.invalid"
	if _, d, ok := strings.Cut(from.Address, "@"); ok && d != "" {
		domain = d
	}
	return "<" + deliveryID + "@" + domain + ">"
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func body(h header, events []delivery.Event) []byte {
	var b bytes.Buffer
	if len(events) > 1 {
		fmt.Fprintf(&b, "%d changes in the cluster:\r\n\r\n", len(events))
		for _, ev := range events {
			fmt.Fprintf(&b, "  - %s\r\n", Summary(ev))
		}
		b.WriteString("\r\n")
	}
	for i, ev := range events {
		if i > 0 {
			b.WriteString("\r\n----\r\n\r\n")
		}
		fmt.Fprintf(&b, "%s.\r\n\r\n", Summary(ev))
		row := func(k, v string) {
			if v != "" {
				fmt.Fprintf(&b, "%-10s %s\r\n", k+":", v)
			}
		}
		row("Event", ev.Type)
		row("What", ev.Hook.What())
		row("Resource", ev.URI)
		row("Source", ev.Source)
		if !ev.Time.IsZero() {
			row("Time", ev.Time.UTC().Format(time.RFC3339))
		}
		row("Revision", fmt.Sprint(ev.Revision))
		row("Event id", ev.ID)
		if len(ev.Payload) > 0 {
			b.WriteString("\r\nPayload:\r\n")
			b.Write(crlf(payloadText(ev.Payload)))
			b.WriteString("\r\n")
		}
	}
	fmt.Fprintf(&b, "\r\n-- \r\nSent by hivemind for subscription %q, delivery %s.\r\n", h.Subscription, h.DeliveryID)
	return b.Bytes()
}

// payloadText shows JSON indented, other text as is, and binary as a note.
func payloadText(p []byte) []byte {
	var out bytes.Buffer
	if json.Valid(p) && json.Indent(&out, p, "  ", "  ") == nil {
		return append([]byte("  "), out.Bytes()...)
	}
	if bytes.ContainsFunc(p, func(r rune) bool { return r == 0xFFFD || r < 0x09 }) {
		return fmt.Appendf(nil, "  (%d bytes of binary data)", len(p))
	}
	return p
}

func crlf(p []byte) []byte {
	p = bytes.ReplaceAll(p, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))
}
