package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

type subOut struct {
	Name           string   `json:"name"`
	Target         string   `json:"target"`
	Hooks          []string `json:"hooks,omitempty"`
	Prefix         string   `json:"prefix,omitempty"`
	Types          []string `json:"types,omitempty"`
	Opaque         string   `json:"opaque,omitempty"`
	Capability     string   `json:"capability,omitempty"`
	Filter         string   `json:"filter,omitempty"`
	Secret         string   `json:"secret,omitempty"`
	Disabled       bool     `json:"disabled,omitempty"`
	DisabledReason string   `json:"disabled_reason,omitempty"`
	CreatedAt      string   `json:"created_at,omitempty"`
	BatchWindow    string   `json:"batch_window,omitempty"`
}

func toSub(s *hivemindv1.Subscription) *subOut {
	o := &subOut{Name: s.GetName(), Target: s.GetTarget(), Prefix: s.GetPrefix(), Types: s.GetTypes(), Opaque: s.GetOpaque(),
		Capability: s.GetCapability(), Filter: s.GetFilter(), Secret: s.GetSecret(), Disabled: s.GetDisabled(),
		DisabledReason: s.GetDisabledReason(), CreatedAt: ts(s.GetCreatedAt()), BatchWindow: dur(s.GetBatchWindow())}
	for _, h := range s.GetHooks() {
		o.Hooks = append(o.Hooks, hookName(h))
	}
	return o
}

func subsTable(w io.Writer, subs []*subOut) {
	row(w, "NAME", "TARGET", "PREFIX", "TYPES", "HOOKS", "DISABLED")
	for _, s := range subs {
		dis := "no"
		if s.Disabled {
			dis = "yes: " + s.DisabledReason
		}
		row(w, s.Name, s.Target, orDash(s.Prefix), orDash(strings.Join(s.Types, ",")), orDash(strings.Join(s.Hooks, ",")), dis)
	}
}

// notifierCall runs one call on a notifier (the first alive, or --node).
func notifierCall[T any](g *globals, cmd *cobra.Command, fn func(hivemindv1.NotifierClient) (T, error)) (T, error) {
	var zero T
	cl, err := g.clients()
	if err != nil {
		return zero, err
	}
	return onRole(cmd.Context(), cl, roleNotifier, func(conn *grpc.ClientConn) (T, error) {
		return fn(hivemindv1.NewNotifierClient(conn))
	})
}

func subsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "subs",
		Aliases: []string{"subscriptions"},
		Short:   "Manage subscriptions: which events go to which webhook or mailbox",
		Example: `  hivectl subs create web-changes https://hooks.example.com/x --prefix /app/web/
  hivectl subs list
  hivectl subs test web-changes`,
	}
	cmd.AddCommand(subsListCmd(g), subsGetCmd(g), subsCreateCmd(g), subsDeleteCmd(g), subsTestCmd(g))
	return cmd
}

func subsListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "list", Aliases: []string{"ls"},
		Short:   "List the subscriptions",
		Example: `  hivectl subs list -o json`,
		Args:    exactArgs(),
		RunE: g.run(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cmd.SetContext(ctx)
			resp, err := notifierCall(g, cmd, func(n hivemindv1.NotifierClient) (*hivemindv1.ListSubscriptionsResponse, error) {
				return n.ListSubscriptions(ctx, &hivemindv1.ListSubscriptionsRequest{})
			})
			if err != nil {
				return err
			}
			out := []*subOut{}
			for _, s := range resp.GetSubscriptions() {
				out = append(out, toSub(s))
			}
			return g.print(struct {
				Subscriptions []*subOut `json:"subscriptions"`
			}{out}, func(w io.Writer) { subsTable(w, out) })
		}),
	}
}

func subsGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "get NAME",
		Short:   "Show one subscription (a missing one exits with 3)",
		Example: `  hivectl subs get web-changes -o yaml`,
		Args:    exactArgs("NAME"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cmd.SetContext(ctx)
			resp, err := notifierCall(g, cmd, func(n hivemindv1.NotifierClient) (*hivemindv1.GetSubscriptionResponse, error) {
				return n.GetSubscription(ctx, &hivemindv1.GetSubscriptionRequest{Name: args[0]})
			})
			if err != nil {
				return err
			}
			s := toSub(resp.GetSubscription())
			return g.print(s, func(w io.Writer) { subsTable(w, []*subOut{s}) })
		}),
	}
}

func subsCreateCmd(g *globals) *cobra.Command {
	var s subOut
	var hooks []string
	var batch time.Duration
	cmd := &cobra.Command{
		Use:   "create NAME TARGET",
		Short: "Register a subscription",
		Long: `Register subscription NAME sending matching events to TARGET: a webhook URL
(http or https) or mailto:a@x,b@y. The webhook signing secret is generated
unless given, and shown only in this answer. --filter needs a token with
the filter scope.`,
		Example: `  hivectl subs create web-changes http://127.0.0.1:8099/hook --prefix /app/web/
  hivectl subs create failures mailto:ops@example.com --type member.failed --batch-window 1m
  hivectl subs create big-deploys https://hooks.example.com/d --type deploy.started --filter 'event.payload.size() > 100'`,
		Args: exactArgs("NAME", "TARGET"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			req := &hivemindv1.Subscription{Name: args[0], Target: args[1], Prefix: s.Prefix, Types: s.Types, Opaque: s.Opaque,
				Capability: s.Capability, Filter: s.Filter, Secret: s.Secret}
			for _, h := range hooks {
				hk, err := parseHook(h)
				if err != nil {
					return err
				}
				req.Hooks = append(req.Hooks, hk)
			}
			if batch > 0 {
				req.BatchWindow = durationpb.New(batch)
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cmd.SetContext(ctx)
			resp, err := notifierCall(g, cmd, func(n hivemindv1.NotifierClient) (*hivemindv1.CreateSubscriptionResponse, error) {
				return n.CreateSubscription(ctx, &hivemindv1.CreateSubscriptionRequest{Subscription: req})
			})
			if err != nil {
				return err
			}
			out := toSub(resp.GetSubscription())
			return g.print(struct {
				Revision     int64   `json:"revision"`
				Subscription *subOut `json:"subscription"`
			}{resp.GetRevision(), out}, func(w io.Writer) {
				row(w, fmt.Sprintf("created %s, revision %d", out.Name, resp.GetRevision()))
				if out.Secret != "" {
					row(w, "signing secret (shown once): "+out.Secret)
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&s.Prefix, "prefix", "", "only events whose uri starts with this")
	f.StringSliceVar(&s.Types, "type", nil, "only these event types (repeat or comma-separate)")
	f.StringSliceVar(&hooks, "hook", nil, "only these hooks: create, modify, delete, query")
	f.StringVar(&s.Opaque, "opaque", "", "passed to the receiver unchanged")
	f.StringVar(&s.Capability, "capability", "", "capability the receiver requires, sent with every delivery")
	f.StringVar(&s.Filter, "filter", "", "CEL expression over `event`, evaluating to bool")
	f.StringVar(&s.Secret, "secret", "", "webhook signing secret (whsec_…); generated when empty")
	f.DurationVar(&batch, "batch-window", 0, "mail: one message per window instead of per event")
	return cmd
}

func subsDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Aliases: []string{"rm", "del"},
		Short:   "Delete a subscription",
		Example: `  hivectl subs delete web-changes`,
		Args:    exactArgs("NAME"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cmd.SetContext(ctx)
			resp, err := notifierCall(g, cmd, func(n hivemindv1.NotifierClient) (*hivemindv1.DeleteSubscriptionResponse, error) {
				return n.DeleteSubscription(ctx, &hivemindv1.DeleteSubscriptionRequest{Name: args[0]})
			})
			if err != nil {
				return err
			}
			return g.print(struct {
				Revision int64 `json:"revision"`
			}{resp.GetRevision()}, func(w io.Writer) {
				row(w, fmt.Sprintf("deleted %s, revision %d", args[0], resp.GetRevision()))
			})
		}),
	}
}

type attemptOut struct {
	At         string `json:"at"`
	StatusCode int32  `json:"status_code"`
	Latency    string `json:"latency"`
	Error      string `json:"error,omitempty"`
	Notifier   string `json:"notifier"`
}

type deliveryOut struct {
	ID            string        `json:"id"`
	Subscription  string        `json:"subscription"`
	EventID       string        `json:"event_id"`
	EventRevision int64         `json:"event_revision"`
	State         string        `json:"state"`
	Attempts      []*attemptOut `json:"attempts"`
	CompletedAt   string        `json:"completed_at,omitempty"`
}

func toDelivery(d *hivemindv1.Delivery) *deliveryOut {
	o := &deliveryOut{ID: d.GetId(), Subscription: d.GetSubscription(), EventID: d.GetEventId(), EventRevision: d.GetEventRevision(),
		State: d.GetState(), CompletedAt: ts(d.GetCompletedAt()), Attempts: []*attemptOut{}}
	for _, a := range d.GetAttempts() {
		o.Attempts = append(o.Attempts, &attemptOut{At: ts(a.GetAt()), StatusCode: a.GetStatusCode(), Latency: dur(a.GetLatency()), Error: a.GetError(), Notifier: a.GetNotifier()})
	}
	return o
}

func deliveriesTable(w io.Writer, ds []*deliveryOut) {
	row(w, "ID", "EVENT_REV", "STATE", "ATTEMPTS", "LAST_STATUS", "LAST_ERROR", "COMPLETED")
	for _, d := range ds {
		status, errText := "-", "-"
		if n := len(d.Attempts); n > 0 {
			status = fmt.Sprint(d.Attempts[n-1].StatusCode)
			errText = orDash(d.Attempts[n-1].Error)
		}
		row(w, d.ID, d.EventRevision, d.State, len(d.Attempts), status, errText, orDash(d.CompletedAt))
	}
}

func subsTestCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "test NAME",
		Short:   "Send a synthetic event to the subscription's target now, and show the attempt",
		Example: `  hivectl subs test web-changes`,
		Args:    exactArgs("NAME"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cmd.SetContext(ctx)
			resp, err := notifierCall(g, cmd, func(n hivemindv1.NotifierClient) (*hivemindv1.TestSubscriptionResponse, error) {
				return n.TestSubscription(ctx, &hivemindv1.TestSubscriptionRequest{Name: args[0]})
			})
			if err != nil {
				return err
			}
			d := toDelivery(resp.GetDelivery())
			return g.print(d, func(w io.Writer) { deliveriesTable(w, []*deliveryOut{d}) })
		}),
	}
}

func deliveriesCmd(g *globals) *cobra.Command {
	var limit int32
	cmd := &cobra.Command{
		Use:   "deliveries SUBSCRIPTION",
		Short: "The deliveries of a subscription, newest first: attempts, status codes, state",
		Example: `  hivectl deliveries web-changes
  hivectl deliveries web-changes --limit 5 -o json`,
		Args: exactArgs("SUBSCRIPTION"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cmd.SetContext(ctx)
			resp, err := notifierCall(g, cmd, func(n hivemindv1.NotifierClient) (*hivemindv1.ListDeliveriesResponse, error) {
				return n.ListDeliveries(ctx, &hivemindv1.ListDeliveriesRequest{Subscription: args[0], Limit: limit})
			})
			if err != nil {
				return err
			}
			out := []*deliveryOut{}
			for _, d := range resp.GetDeliveries() {
				out = append(out, toDelivery(d))
			}
			return g.print(struct {
				Deliveries []*deliveryOut `json:"deliveries"`
			}{out}, func(w io.Writer) { deliveriesTable(w, out) })
		}),
	}
	cmd.Flags().Int32Var(&limit, "limit", 100, "at most this many")
	return cmd
}
