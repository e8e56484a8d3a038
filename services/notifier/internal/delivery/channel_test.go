package delivery

import (
	"context"
	"strings"
	"testing"
)

type fakeChannel struct{ batches bool }

func (fakeChannel) ValidateTarget(string) error { return nil }
func (fakeChannel) Ready() error                { return nil }
func (c fakeChannel) Batches() bool             { return c.batches }
func (fakeChannel) NewSecret() string           { return "" }
func (fakeChannel) Deliver(context.Context, Delivery, func(Attempt)) (Result, error) {
	return Result{}, nil
}

// A target's channel is chosen by its scheme, whatever its case; an
// unknown scheme is refused with the schemes there are.
func TestChannelsChooseByScheme(t *testing.T) {
	hook, mail := &fakeChannel{}, &fakeChannel{batches: true}
	c := NewChannels()
	c.Register(hook, "http", "https")
	c.Register(mail, "mailto")
	for target, want := range map[string]Channel{
		"https://example.com/x": hook, "HTTP://example.com": hook, "mailto:a@example.com": mail, "MailTo:a@example.com": mail,
	} {
		if got, err := c.For(target); err != nil || got != want {
			t.Errorf("For(%q) = %v, %v", target, got, err)
		}
	}
	for _, target := range []string{"ftp://x", "example.com/hook", ""} {
		if _, err := c.For(target); err == nil || !strings.Contains(err.Error(), "http:, https:, mailto:") {
			t.Errorf("For(%q): %v, want an error listing the schemes", target, err)
		}
	}
	if !c.Batches("mailto:a@example.com") || c.Batches("https://x") || c.Batches("ftp://x") {
		t.Error("Batches")
	}
	if got := c.BatchingSchemes(); len(got) != 1 || got[0] != "mailto:" {
		t.Errorf("BatchingSchemes = %v", got)
	}
}
