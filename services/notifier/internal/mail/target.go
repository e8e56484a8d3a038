package mail

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
)

// MaxRecipients bounds the addresses of one mailto: target.
const MaxRecipients = 50

// IsTarget reports whether a subscription target is a mail target.
func IsTarget(target string) bool {
	return len(target) >= 7 && strings.EqualFold(target[:7], "mailto:")
}

// ParseTarget parses a mailto: target (RFC 6068): comma-separated
// addresses, percent-encoded where needed, and optionally more in to, cc or
// bcc header fields ("mailto:a@example.com,b@example.com?cc=c@example.com").
// Every address is validated; other header fields are refused, since the
// notifier writes subject and body itself.
func ParseTarget(target string) ([]*mail.Address, error) {
	if !IsTarget(target) {
		return nil, errors.New("mail target: must start with mailto:")
	}
	rest := target[len("mailto:"):]
	addrPart, query, _ := strings.Cut(rest, "?")
	lists := []string{addrPart}
	// Header fields in the order written, so recipients keep their order.
	for _, field := range strings.Split(query, "&") {
		if field == "" {
			continue
		}
		k, v, _ := strings.Cut(field, "=")
		k, kerr := url.QueryUnescape(k)
		v, verr := url.QueryUnescape(v)
		if err := errors.Join(kerr, verr); err != nil {
			return nil, fmt.Errorf("mail target: %w", err)
		}
		switch strings.ToLower(k) {
		case "to", "cc", "bcc":
			lists = append(lists, v)
		default:
			return nil, fmt.Errorf("mail target: header field %q not supported (only to, cc, bcc)", k)
		}
	}
	var out []*mail.Address
	seen := map[string]bool{}
	for i, list := range lists {
		if i == 0 {
			var err error
			if list, err = url.PathUnescape(list); err != nil {
				return nil, fmt.Errorf("mail target: %w", err)
			}
		}
		if strings.TrimSpace(list) == "" {
			continue
		}
		addrs, err := mail.ParseAddressList(list)
		if err != nil {
			return nil, fmt.Errorf("mail target: %q: %w", list, err)
		}
		for _, a := range addrs {
			key := strings.ToLower(a.Address)
			if !seen[key] {
				seen[key] = true
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("mail target: no address")
	}
	if len(out) > MaxRecipients {
		return nil, fmt.Errorf("mail target: %d addresses, more than %d", len(out), MaxRecipients)
	}
	return out, nil
}
