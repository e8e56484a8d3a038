package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

type statusMember struct {
	Name    string   `json:"name"`
	Roles   []string `json:"roles"`
	Address string   `json:"grpc_address"`
	State   string   `json:"state"`
	// Raft is voter or learner for control-plane members, else empty.
	Raft   string `json:"raft,omitempty"`
	Leader bool   `json:"leader,omitempty"`
	// Health is the member's gRPC health answer (SERVING, NOT_SERVING) or
	// why it could not be asked.
	Health string `json:"health"`
}

type statusOut struct {
	Leader         string          `json:"leader"`
	LeaderID       uint64          `json:"leader_id"`
	Term           uint64          `json:"term"`
	Revision       int64           `json:"revision"`
	OldestRevision int64           `json:"oldest_revision"`
	Epoch          uint64          `json:"epoch"`
	Degraded       bool            `json:"degraded"`
	DegradedReason string          `json:"degraded_reason,omitempty"`
	AnsweredBy     string          `json:"answered_by"`
	Members        []*statusMember `json:"members"`
}

func statusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "The cluster at a glance: leader, term, revision, epoch, members and their health",
		Long: `Show the control plane's view (leader, term, applied and oldest revision,
epoch, degraded or not and why) and every member of every role with its
registry state, raft part and gRPC health, asked of each member directly.`,
		Example: `  hivectl status
  hivectl status -o json | jq .degraded`,
		Args: exactArgs(),
		RunE: g.run(func(cmd *cobra.Command, _ []string) error {
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
			ms, err := cl.listMembers(ctx)
			if err != nil {
				return err
			}
			out := buildStatus(st, ms)
			cl.checkHealth(ctx, out.Members)
			return g.print(out, func(w io.Writer) { statusTable(w, out) })
		}),
	}
}

func buildStatus(st *hivemindv1.StatusResponse, ms *hivemindv1.ListMembersResponse) *statusOut {
	out := &statusOut{
		Leader: st.GetLeaderName(), LeaderID: st.GetLeaderId(), Term: st.GetTerm(),
		Revision: st.GetAppliedRevision(), OldestRevision: st.GetOldestRevision(), Epoch: st.GetEpoch(),
		Degraded: st.GetDegraded(), DegradedReason: st.GetDegradedReason(), AnsweredBy: st.GetHeader().GetNodeName(),
		Members: []*statusMember{},
	}
	raft := map[string]string{}
	for _, m := range st.GetVoters() {
		raft[m.GetName()] = "voter"
	}
	for _, m := range st.GetLearners() {
		raft[m.GetName()] = "learner"
	}
	for _, v := range ms.GetMembers() {
		m := v.GetMember()
		out.Members = append(out.Members, &statusMember{
			Name: m.GetName(), Roles: append([]string{}, m.GetRoles().GetPerforms()...), Address: m.GetGrpcAddress(),
			State: memberStateName(m.GetState()), Raft: raft[m.GetName()], Leader: m.GetName() == st.GetLeaderName(),
		})
	}
	return out
}

// checkHealth asks every member's health service, at once, each bounded
// to a couple of seconds so a dead member does not hold the answer.
func (c *clients) checkHealth(ctx context.Context, members []*statusMember) {
	var wg sync.WaitGroup
	for _, m := range members {
		if m.Address == "" {
			m.Health = "no address"
			continue
		}
		conn, err := c.conn(m.Address)
		if err != nil {
			m.Health = err.Error()
			continue
		}
		wg.Go(func() {
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(hctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				m.Health = "unreachable"
				return
			}
			m.Health = resp.GetStatus().String()
		})
	}
	wg.Wait()
}

func statusTable(w io.Writer, s *statusOut) {
	leader := s.Leader
	if leader == "" {
		leader = "none"
	}
	degraded := "no"
	if s.Degraded {
		degraded = "YES: " + s.DegradedReason
	}
	row(w, "leader:", leader)
	row(w, "term:", s.Term)
	row(w, "revision:", fmt.Sprintf("%d (oldest retained %d)", s.Revision, s.OldestRevision))
	row(w, "epoch:", s.Epoch)
	row(w, "degraded:", degraded)
	row(w, "answered by:", s.AnsweredBy)
	row(w)
	row(w, "NAME", "ROLES", "ADDRESS", "STATE", "RAFT", "HEALTH")
	for _, m := range s.Members {
		r := orDash(m.Raft)
		if m.Leader {
			r += ",leader"
		}
		row(w, m.Name, strings.Join(m.Roles, ","), orDash(m.Address), m.State, r, m.Health)
	}
}

func membersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "members",
		Aliases: []string{"member"},
		Short:   "List, add and remove members",
		Example: `  hivectl members list
  hivectl members remove host7
  hivectl members add cp4 127.0.0.1:7004`,
	}
	cmd.AddCommand(membersListCmd(g), membersRemoveCmd(g), membersAddCmd(g))
	return cmd
}

type memberOut struct {
	Name          string   `json:"name"`
	Roles         []string `json:"roles"`
	GRPCAddress   string   `json:"grpc_address"`
	GossipAddress string   `json:"gossip_address,omitempty"`
	State         string   `json:"state"`
	Incarnation   uint64   `json:"incarnation"`
	JoinRevision  int64    `json:"join_revision"`
	StateRevision int64    `json:"state_revision"`
	Gossip        string   `json:"gossip"`
	GossipRTT     string   `json:"gossip_rtt,omitempty"`
}

func toMembers(ms *hivemindv1.ListMembersResponse) []*memberOut {
	out := []*memberOut{}
	for _, v := range ms.GetMembers() {
		m := v.GetMember()
		out = append(out, &memberOut{
			Name: m.GetName(), Roles: append([]string{}, m.GetRoles().GetPerforms()...),
			GRPCAddress: m.GetGrpcAddress(), GossipAddress: m.GetGossipAddress(), State: memberStateName(m.GetState()),
			Incarnation: m.GetIncarnation(), JoinRevision: m.GetJoinRevision(), StateRevision: m.GetStateRevision(),
			Gossip: orDash(v.GetGossip().GetState()), GossipRTT: dur(v.GetGossip().GetRtt()),
		})
	}
	return out
}

func membersListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List every admitted member with its registry state and gossip view",
		Example: `  hivectl members list
  hivectl members list --endpoints 127.0.0.1:7101 -o json`,
		Args: exactArgs(),
		RunE: g.run(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			ms, err := cl.listMembers(ctx)
			if err != nil {
				return err
			}
			out := toMembers(ms)
			return g.print(struct {
				Members       []*memberOut `json:"members"`
				Epoch         uint64       `json:"epoch"`
				Revision      int64        `json:"revision"`
				AnsweredBy    string       `json:"answered_by"`
				RegistryError string       `json:"registry_error,omitempty"`
			}{out, ms.GetEpoch(), ms.GetRevision(), ms.GetAnsweredBy(), ms.GetRegistryError()}, func(w io.Writer) {
				row(w, "NAME", "ROLES", "ADDRESS", "STATE", "GOSSIP", "INCARNATION", "JOIN_REV")
				for _, m := range out {
					row(w, m.Name, strings.Join(m.Roles, ","), orDash(m.GRPCAddress), m.State, m.Gossip, m.Incarnation, m.JoinRevision)
				}
			})
		}),
	}
}

func membersRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "remove NAME",
		Aliases: []string{"rm"},
		Short:   "Remove a member: from raft when it is a control-plane member, and from the registry",
		Long: `Remove a member for good: a control-plane member leaves the raft group
(MemberRemove), and every member's registry entry is marked left
(Membership/Leave), which releases its name. Needs the admin scope.`,
		Example: `  hivectl members remove host7
  hivectl members remove cp4`,
		Args: exactArgs("NAME"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
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
			ml, err := cp.MemberList(ctx)
			if err != nil {
				return err
			}
			fromRaft := false
			for _, m := range ml.GetMembers() {
				if m.GetName() == args[0] {
					if _, err := cp.MemberRemove(ctx, &hivemindv1.MemberRemoveRequest{Id: m.GetId()}); err != nil {
						return err
					}
					fromRaft = true
				}
			}
			resp, err := cp.Leave(ctx, &hivemindv1.LeaveRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return g.print(struct {
				Name     string `json:"name"`
				FromRaft bool   `json:"from_raft"`
				Revision int64  `json:"revision"`
			}{args[0], fromRaft, resp.GetRevision()}, func(w io.Writer) {
				what := "removed " + args[0]
				if fromRaft {
					what += " (and from raft)"
				}
				row(w, fmt.Sprintf("%s, revision %d", what, resp.GetRevision()))
			})
		}),
	}
}

func membersAddCmd(g *globals) *cobra.Command {
	var grpcAddr string
	cmd := &cobra.Command{
		Use:   "add NAME PEER_ADDRESS",
		Short: "Add a control-plane member (as a learner, promoted once caught up)",
		Long: `Add a control-plane node to the raft group as a learner; start it with
--join afterwards. The leader promotes it to voter once it has caught up.
Needs the admin scope.`,
		Example: `  hivectl members add cp4 127.0.0.1:7004`,
		Args:    exactArgs("NAME", "PEER_ADDRESS"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
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
			resp, err := cp.MemberAdd(ctx, &hivemindv1.MemberAddRequest{Name: args[0], PeerAddress: args[1], GrpcAddress: grpcAddr})
			if err != nil {
				return err
			}
			m := resp.GetMember()
			return g.print(struct {
				ID      uint64 `json:"id"`
				Name    string `json:"name"`
				Peer    string `json:"peer_address"`
				GRPC    string `json:"grpc_address,omitempty"`
				Learner bool   `json:"learner"`
			}{m.GetId(), m.GetName(), m.GetPeerAddress(), m.GetGrpcAddress(), m.GetLearner()}, func(w io.Writer) {
				row(w, fmt.Sprintf("added %s (id %x) as a learner; start it with --join", m.GetName(), m.GetId()))
			})
		}),
	}
	cmd.Flags().StringVar(&grpcAddr, "grpc-addr", "", "the member's gRPC API address (default: its peer address)")
	return cmd
}
