package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// intentEventTypes are the events the state machine emits for intents;
// each carries the intent's state after the change as a JSON payload.
var intentEventTypes = []string{"intent.claimed", "intent.renewed", "intent.completed", "intent.released"}

type intentOut struct {
	Key       string `json:"key"`
	Holder    string `json:"holder"`
	State     string `json:"state"`
	Claims    int64  `json:"claims"`
	ExpiresAt string `json:"expires_at,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
	// Revision of the intent's last change.
	Revision int64 `json:"revision"`
}

func intentsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "intents",
		Short: "List intents, release a claim",
		Example: `  hivectl intents list --state claimed
  hivectl intents release /deliver/sub1/ev2 --holder notifier-1`,
	}
	cmd.AddCommand(intentsListCmd(g), intentsReleaseCmd(g))
	return cmd
}

func intentsListCmd(g *globals) *cobra.Command {
	var prefix, state string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List intents with their holder, state and lease",
		Long: `List the intents under --prefix as the retained event log records them:
the last intent.* event of each key, which carries its holder, state,
claim count, lease expiry and outcome. Intents whose every event was
compacted away are not shown.`,
		Example: `  hivectl intents list
  hivectl intents list --prefix /deliver/web-changes/ --state claimed -o json`,
		Args: exactArgs(),
		RunE: g.run(func(cmd *cobra.Command, _ []string) error {
			switch state {
			case "", "claimed", "completed", "released":
			default:
				return usagef("--state %q: want claimed, completed or released", state)
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
			st, err := cp.Status(ctx)
			if err != nil {
				return err
			}
			upTo := st.GetAppliedRevision()
			byKey := map[string]*intentOut{}
			from := max(st.GetOldestRevision(), 1)
			if from <= upTo {
				req := &hivemindv1.WatchRequest{StartRevision: from, Prefix: prefix, Types: intentEventTypes, ProgressInterval: durationpb.New(200 * time.Millisecond)}
				err = cp.Watch(ctx, req, func(resp *hivemindv1.WatchResponse) error {
					for _, e := range resp.GetEvents() {
						if e.GetRevision() > upTo {
							return errCaughtUp
						}
						var p struct {
							Holder    string `json:"holder"`
							State     string `json:"state"`
							Claims    int64  `json:"claims"`
							ExpiresAt string `json:"expires_at"`
							Outcome   string `json:"outcome"`
						}
						if err := json.Unmarshal(e.GetPayload(), &p); err != nil {
							return fmt.Errorf("%s event at revision %d: payload is not the intent's JSON: %w", e.GetType(), e.GetRevision(), err)
						}
						byKey[e.GetUri()] = &intentOut{Key: e.GetUri(), Holder: p.Holder, State: p.State, Claims: p.Claims, ExpiresAt: p.ExpiresAt, Outcome: p.Outcome, Revision: e.GetRevision()}
					}
					if resp.GetHeader().GetRevision() >= upTo {
						return errCaughtUp
					}
					return nil
				})
				if err != nil && !errors.Is(err, errCaughtUp) {
					return err
				}
			}
			out := []*intentOut{}
			for _, in := range byKey {
				if state == "" || in.State == state {
					out = append(out, in)
				}
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
			return g.print(struct {
				Revision int64        `json:"revision"`
				Intents  []*intentOut `json:"intents"`
			}{upTo, out}, func(w io.Writer) {
				row(w, "KEY", "HOLDER", "STATE", "CLAIMS", "EXPIRES", "OUTCOME", "REVISION")
				for _, in := range out {
					row(w, in.Key, in.Holder, in.State, in.Claims, orDash(in.ExpiresAt), orDash(in.Outcome), in.Revision)
				}
			})
		}),
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only intents whose key starts with this")
	cmd.Flags().StringVar(&state, "state", "", "only intents in this state: claimed, completed or released")
	return cmd
}

func intentsReleaseCmd(g *globals) *cobra.Command {
	var holder string
	cmd := &cobra.Command{
		Use:   "release KEY --holder HOLDER",
		Short: "Give up a claim on an intent so that another holder may take it",
		Long: `Release the claim HOLDER holds on intent KEY without completing it, so
that the next claim wins at once instead of after the lease.`,
		Example: `  hivectl intents release /deliver/web-changes/01J0ABC --holder notifier1`,
		Args:    exactArgs("KEY"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			if holder == "" {
				return usagef("missing --holder: the intent's current holder")
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
			resp, err := cp.ReleaseIntent(ctx, &hivemindv1.ReleaseIntentRequest{Key: args[0], Holder: holder})
			if err != nil {
				return err
			}
			in := resp.GetIntent()
			out := &intentOut{Key: in.GetKey(), Holder: in.GetHolder(), State: intentState(in.GetState()), Claims: in.GetClaims(), Outcome: in.GetOutcome(), Revision: resp.GetHeader().GetRevision()}
			return g.print(out, func(w io.Writer) {
				row(w, fmt.Sprintf("released %s (held by %s), revision %d", out.Key, out.Holder, out.Revision))
			})
		}),
	}
	cmd.Flags().StringVar(&holder, "holder", "", "the current holder of the claim")
	return cmd
}

func intentState(s hivemindv1.Intent_State) string {
	switch s {
	case hivemindv1.Intent_STATE_CLAIMED:
		return "claimed"
	case hivemindv1.Intent_STATE_COMPLETED:
		return "completed"
	case hivemindv1.Intent_STATE_RELEASED:
		return "released"
	}
	return "unspecified"
}
