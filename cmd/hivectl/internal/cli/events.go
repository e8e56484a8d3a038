package cli

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// errCaughtUp ends a history read once it reached the revision it began at.
var errCaughtUp = errors.New("caught up")

// streamEvents prints the events under key (exactly key when exact) from
// revision from on, leaving out those older than notBefore when set. With
// untilNow it stops at the revision that was current when it began;
// otherwise it runs until the context ends.
func (g *globals) streamEvents(cmd *cobra.Command, key string, exact bool, from int64, notBefore time.Time, types []string, untilNow bool) error {
	ctx, cancel := g.ctx(cmd, !untilNow)
	defer cancel()
	cl, err := g.clients()
	if err != nil {
		return err
	}
	cp, err := cl.controlPlane(ctx)
	if err != nil {
		return err
	}
	// A history starts at the oldest retained revision unless told
	// otherwise; so does a live watch asked for events since a time.
	var upTo int64
	if untilNow || (from == 0 && !notBefore.IsZero()) {
		st, err := cp.Status(ctx)
		if err != nil {
			return err
		}
		upTo = st.GetAppliedRevision()
		if from == 0 {
			from = max(st.GetOldestRevision(), 1)
		}
		if untilNow && from > upTo {
			return nil
		}
	}
	req := &hivemindv1.WatchRequest{StartRevision: from, Prefix: key, Types: types}
	if untilNow {
		// Progress notifications end the read when the events that match
		// stop before the current revision.
		req.ProgressInterval = durationpb.New(200 * time.Millisecond)
	}
	g.live = !untilNow
	if g.live {
		g.streamHeader(fixedRow(eventWidths, eventHeader...))
	} else {
		g.streamHeader(eventHeader...)
	}
	err = cp.Watch(ctx, req, func(resp *hivemindv1.WatchResponse) error {
		for _, e := range resp.GetEvents() {
			if untilNow && e.GetRevision() > upTo {
				return errCaughtUp
			}
			if exact && e.GetUri() != key {
				continue
			}
			if !notBefore.IsZero() && e.GetTime().AsTime().Before(notBefore) {
				continue
			}
			if err := g.printItem(toEvent(e), func(w io.Writer) { eventRow(w, e, g.live) }); err != nil {
				return err
			}
		}
		if untilNow && resp.GetHeader().GetRevision() >= upTo {
			return errCaughtUp
		}
		return nil
	})
	if errors.Is(err, errCaughtUp) {
		return nil
	}
	if !untilNow {
		// A watch ends when interrupted or when --timeout runs out; the
		// server may report the deadline before the local timer fires.
		if cmd.Context().Err() != nil && (errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled) {
			return nil
		}
		if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
			return nil
		}
	}
	return err
}

func timestampIn(d time.Duration) *timestamppb.Timestamp {
	return timestamppb.New(time.Now().Add(d))
}

func eventsCmd(g *globals) *cobra.Command {
	var since string
	var prefix string
	var types []string
	var follow bool
	cmd := &cobra.Command{
		Use:   "events",
		Short: "List the event log, or append an event",
		Long: `List the retained events, oldest first, up to the current revision:
every one, or those of --type and under --prefix, from --since on: a
revision, a duration back from now (10m, 2h) or a time (RFC 3339). With
--follow, keep streaming new ones.`,
		Example: `  hivectl events --type member.joined,member.failed
  hivectl events --prefix /app/ --since 10 -o json
  hivectl events --type member.failed --since 1h
  hivectl events --follow --type deploy.started`,
		Args: exactArgs(),
		RunE: g.run(func(cmd *cobra.Command, _ []string) error {
			rev, notBefore, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			return g.streamEvents(cmd, prefix, false, rev, notBefore, types, !follow)
		}),
	}
	cmd.Flags().StringVar(&since, "since", "", "first revision, or a duration back from now, or an RFC 3339 time (default: the oldest retained; with --follow: from now)")
	cmd.Flags().StringVar(&prefix, "prefix", "", "only events whose uri starts with this")
	cmd.Flags().StringSliceVar(&types, "type", nil, "only these event types (repeat or comma-separate)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new events after the history")
	cmd.AddCommand(eventsAppendCmd(g))
	return cmd
}

func eventsAppendCmd(g *globals) *cobra.Command {
	var hook, payload, file string
	var maxHops uint32
	var expiresIn time.Duration
	cmd := &cobra.Command{
		Use:   "append TYPE URI",
		Short: "Append an event to the log",
		Long: `Append an event of TYPE about URI, with a payload from --payload or
--file. Types the cluster emits itself (kv.*, member.*, cluster.*,
intent.*, subscription.*) are refused; the event's source is the caller.`,
		Example: `  hivectl events append deploy.started /app/web --payload '{"version":"1.2.3"}'
  hivectl events append backup.done /app/db --hook modify --file report.json`,
		Args: exactArgs("TYPE", "URI"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			h, err := parseHook(hook)
			if err != nil {
				return err
			}
			if payload != "" && file != "" {
				return usagef("give the payload either with --payload or with --file, not both")
			}
			body := []byte(payload)
			if file != "" {
				if body, err = os.ReadFile(file); err != nil {
					return usagef("--file: %v", err)
				}
			}
			req := &hivemindv1.AppendEventRequest{Type: args[0], Uri: args[1], Hook: h, Payload: body}
			if maxHops > 0 || expiresIn > 0 {
				req.Ttl = &hivemindv1.EventTTL{MaxHops: maxHops}
				if expiresIn > 0 {
					req.Ttl.ExpiresAt = timestampIn(expiresIn)
				}
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			cp, err := cl.controlPlane(ctx)
			if err != nil {
				return err
			}
			resp, err := cp.AppendEvent(ctx, req)
			if err != nil {
				return err
			}
			e := resp.GetEvent()
			return g.print(toEvent(e), func(w io.Writer) {
				row(w, "appended "+e.GetType()+" "+e.GetId()+" revision "+strconv.FormatInt(e.GetRevision(), 10))
			})
		}),
	}
	cmd.Flags().StringVar(&hook, "hook", "create", "create, modify, delete or query")
	cmd.Flags().StringVar(&payload, "payload", "", "the payload")
	cmd.Flags().StringVar(&file, "file", "", "read the payload from this file")
	cmd.Flags().Uint32Var(&maxHops, "max-hops", 0, "TTL: at most this many hops (0: unlimited)")
	cmd.Flags().DurationVar(&expiresIn, "expires-in", 0, "TTL: not delivered after this long")
	return cmd
}

// parseSince reads --since: a revision, a duration back from now, or a
// time. It returns the revision (0 when a time was given) and the time.
func parseSince(s string, now time.Time) (int64, time.Time, error) {
	if s == "" {
		return 0, time.Time{}, nil
	}
	if r, err := strconv.ParseInt(s, 10, 64); err == nil {
		if r <= 0 {
			return 0, time.Time{}, usagef("--since %q: a revision is positive", s)
		}
		return r, time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return 0, now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return 0, t, nil
	}
	return 0, time.Time{}, usagef("--since %q: want a revision, a duration (10m) or an RFC 3339 time", s)
}
