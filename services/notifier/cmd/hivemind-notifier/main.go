// Command hivemind-notifier runs the hivemind notifier role: it turns
// committed events into webhooks and mail for the subscriptions stored in
// the control plane, once per event and subscription across replicas.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hivemind/hivemind/pkg/daemon"
	"github.com/hivemind/hivemind/services/notifier/internal/api"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/egress"
	"github.com/hivemind/hivemind/services/notifier/internal/engine"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/mail"
	"github.com/hivemind/hivemind/services/notifier/internal/subscription"
	"github.com/hivemind/hivemind/services/notifier/internal/webhook"
)

type flags struct {
	smtpRelay, smtpFrom, smtpUser, smtpPasswordFile, smtpTLS string
	smtpInsecureAuth                                         bool
	egressAllow                                              string
	allowLoopback                                            bool
	attemptTimeout, maxAge, lease                            time.Duration
	maxAttempts, workers                                     int
	filterCost                                               uint64
}

func (f *flags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.smtpRelay, "smtp-relay", "", "SMTP relay host:port for mailto: subscriptions; empty: mail targets are refused")
	fs.StringVar(&f.smtpFrom, "smtp-from", "hivemind <hivemind@localhost>", "sender address of notification mail")
	fs.StringVar(&f.smtpUser, "smtp-username", "", "SMTP AUTH PLAIN user name; empty: no authentication")
	fs.StringVar(&f.smtpPasswordFile, "smtp-password-file", "", "file holding the SMTP password")
	fs.StringVar(&f.smtpTLS, "smtp-tls", "required", "STARTTLS to the relay: required, opportunistic or off")
	fs.BoolVar(&f.smtpInsecureAuth, "smtp-insecure-auth", false, "allow sending SMTP credentials without TLS")
	fs.StringVar(&f.egressAllow, "egress-allow", "", "comma-separated CIDR prefixes or addresses webhooks may reach although private, link-local or otherwise special")
	fs.BoolVar(&f.allowLoopback, "egress-allow-loopback", false, "allow webhooks to loopback addresses (a local cluster)")
	fs.DurationVar(&f.attemptTimeout, "attempt-timeout", 10*time.Second, "bound of one delivery attempt")
	fs.DurationVar(&f.maxAge, "retry-max-age", 24*time.Hour, "a delivery is dead-lettered once this long after its event without success")
	fs.IntVar(&f.maxAttempts, "retry-max-attempts", 0, "a delivery is dead-lettered after this many attempts (0: bounded by --retry-max-age only)")
	fs.DurationVar(&f.lease, "lease", 30*time.Second, "length of a delivery claim; a dead replica's deliveries are taken over after it")
	fs.IntVar(&f.workers, "workers", 64, "concurrent claims and deliveries")
	fs.Uint64Var(&f.filterCost, "filter-cost-limit", filter.DefaultLimits().Cost, "CEL cost units one filter evaluation may use")
}

// parts are what the flags build.
type parts struct {
	compiler          *filter.Compiler
	webhook, probe    *webhook.Sender
	mailer, mailProbe *mail.Sender
	retry             delivery.Policy
	// channels deliver with retries; probes make TestSubscription's
	// single attempt. Every delivery channel is registered in channels.
	channels, probes *delivery.Channels
}

// channels registers every delivery channel by its target schemes.
func channels(hook *webhook.Sender, mailer *mail.Sender) *delivery.Channels {
	c := delivery.NewChannels()
	c.Register(webhook.NewChannel(hook), "http", "https")
	c.Register(mail.NewChannel(mailer), "mailto")
	return c
}

func (f *flags) build() (parts, error) {
	p, err := f.senders()
	p.channels, p.probes = channels(p.webhook, p.mailer), channels(p.probe, p.mailProbe)
	return p, err
}

// senders builds the senders of each channel, with retries and with one
// attempt; the mail senders stay nil without --smtp-relay.
func (f *flags) senders() (parts, error) {
	var p parts
	allow, err := egress.ParseAllow(strings.Split(f.egressAllow, ","))
	if err != nil {
		return p, fmt.Errorf("--egress-allow: %w", err)
	}
	guard := egress.Policy{AllowLoopback: f.allowLoopback, Allow: allow}
	p.retry = delivery.DefaultPolicy()
	p.retry.AttemptTimeout, p.retry.MaxAge, p.retry.MaxAttempts = f.attemptTimeout, f.maxAge, f.maxAttempts
	once := p.retry
	once.MaxAttempts = 1
	p.webhook = webhook.New(webhook.Config{Retry: p.retry, Egress: guard})
	p.probe = webhook.New(webhook.Config{Retry: once, Egress: guard})
	if p.compiler, err = filter.NewCompiler(filter.Limits{Cost: f.filterCost}); err != nil {
		return p, err
	}
	if f.smtpRelay == "" {
		return p, nil
	}
	cfg := mail.Config{Relay: f.smtpRelay, TLS: mail.TLSMode(f.smtpTLS), From: f.smtpFrom, Username: f.smtpUser, AllowInsecureAuth: f.smtpInsecureAuth, Retry: p.retry}
	if f.smtpPasswordFile != "" {
		b, err := os.ReadFile(f.smtpPasswordFile)
		if err != nil {
			return p, fmt.Errorf("--smtp-password-file: %w", err)
		}
		cfg.Password = strings.TrimSpace(string(b))
	}
	if p.mailer, err = mail.New(cfg); err != nil {
		return p, err
	}
	cfg.Retry = once
	p.mailProbe, err = mail.New(cfg)
	return p, err
}

func main() {
	var f flags
	daemon.Main(daemon.Role{
		Name:               "notifier",
		Command:            "hivemind-notifier",
		Synopsis:           "Notifier: delivers webhooks and mail for cluster events, once across replicas.",
		DefaultGRPCAddr:    "127.0.0.1:7300",
		DefaultMetricsAddr: "127.0.0.1:9103",
		DefaultGossipAddr:  "127.0.0.1:7949",
		DefaultRequires:    []string{"controlplane"},
		Flags:              f.register,
		Start: func(ctx context.Context, env *daemon.Env) (func(context.Context) error, error) {
			return start(ctx, env, &f)
		},
	})
}

// start joins the cluster, serves the API at once (it answers UNAVAILABLE
// until joined) and keeps a delivery engine running on the node's current
// control-plane client. The node is SERVING only while membership is ready
// and an engine has loaded its cursor and delivers: a notifier that
// cannot deliver says so instead of answering its API as if all were well.
func start(ctx context.Context, env *daemon.Env, f *flags) (func(context.Context) error, error) {
	p, err := f.build()
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	var ready, delivering bool
	setServing := func() { env.Server.SetServing(ready && delivering) }

	node, err := env.NewClusterNode("notifier", daemon.ClusterOptions{
		OnReady: func(r bool, _ string) { mu.Lock(); ready = r; setServing(); mu.Unlock() },
	})
	if err != nil {
		return nil, err
	}
	// The node replaces (and closes) its client when it joins again, so
	// everything asks for the current one.
	current := func() engine.ControlPlane {
		if cp := node.ControlPlane(); cp != nil {
			return cp
		}
		return nil
	}
	api.New(api.Config{
		Name: env.Common.NodeName,
		Store: func() *subscription.Store {
			if cp := current(); cp != nil {
				return subscription.NewStore(cp)
			}
			return nil
		},
		Compiler: p.compiler, Channels: p.probes,
	}).Register(env.Server.GRPC(), env.Auth.Policy())
	node.Start(ctx)

	sup := engine.NewSupervisor(engine.SupervisorConfig{
		Engine: engine.Config{
			Name: env.Common.NodeName, Channels: p.channels,
			Compiler: p.compiler, Lease: f.lease, Workers: f.workers, Logger: env.Logger,
		},
		ControlPlane: current,
		OnState: func(d bool, reason string) {
			if !d {
				env.Logger.Warn("not delivering", "reason", reason)
			}
			mu.Lock()
			delivering = d
			setServing()
			mu.Unlock()
		},
	})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = sup.Run(runCtx)
	}()
	return func(stopCtx context.Context) error {
		cancel()
		select {
		case <-done:
		case <-stopCtx.Done():
		}
		p.webhook.Close()
		p.probe.Close()
		return node.Stop(stopCtx)
	}, nil
}
