package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
)

// Role names as members register them.
const (
	roleControlPlane = "controlplane"
	roleHost         = "host"
	roleDNS          = "dns"
	roleNotifier     = "notifier"
)

// clients holds the connections of one command run.
type clients struct {
	g     *globals
	dial  grpcclient.Config
	conns map[string]*grpc.ClientConn
	cp    *cpclient.Client
	// members is the registry as the first endpoint that answered sees it.
	members *hivemindv1.ListMembersResponse
}

// tokenValue is the operator token: --token, else --token-file, else the
// `make run` token file when it exists.
func (g *globals) tokenValue() (string, error) {
	if g.token != "" {
		return g.token, nil
	}
	path := g.tokenFile
	if path == "" {
		if _, err := os.Stat(DefaultTokenFile); err != nil {
			return "", nil
		}
		path = DefaultTokenFile
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", usagef("--token-file: %v", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", usagef("--token-file %s is empty", path)
	}
	return tok, nil
}

func (g *globals) clients() (*clients, error) {
	if g.cl != nil {
		return g.cl, nil
	}
	if len(g.endpoints) == 0 {
		return nil, usagef("--endpoints is empty: name at least one member (host:port)")
	}
	for _, ep := range g.endpoints {
		if !strings.Contains(ep, ":") {
			return nil, usagef("--endpoints: %q is not host:port", ep)
		}
	}
	var cfg grpcclient.Config
	tok, err := g.tokenValue()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		cfg.Auth = auth.BearerToken(tok)
	}
	files := tlsconfig.Files{CA: g.cacert, Cert: g.cert, Key: g.key}
	if files.Enabled() {
		if (g.cert == "") != (g.key == "") {
			return nil, usagef("--cert and --key go together")
		}
		creds, err := tlsconfig.Client(files)
		if err != nil {
			return nil, usagef("TLS: %v", err)
		}
		cfg.TLS = creds
	}
	g.cl = &clients{g: g, dial: cfg, conns: map[string]*grpc.ClientConn{}}
	return g.cl, nil
}

func (c *clients) close() {
	if c.cp != nil {
		_ = c.cp.Close()
	}
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

func (c *clients) conn(addr string) (*grpc.ClientConn, error) {
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	conn, err := grpcclient.Dial(addr, c.dial)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conns[addr] = conn
	return conn, nil
}

// listMembers asks the endpoints in turn for the registry and keeps the
// first answer.
func (c *clients) listMembers(ctx context.Context) (*hivemindv1.ListMembersResponse, error) {
	if c.members != nil {
		return c.members, nil
	}
	var last error
	for _, ep := range c.g.endpoints {
		conn, err := c.conn(ep)
		if err != nil {
			return nil, err
		}
		resp, err := hivemindv1.NewMembershipClient(conn).ListMembers(ctx, &hivemindv1.ListMembersRequest{Stale: true})
		if err == nil {
			c.members = resp
			return resp, nil
		}
		if status.Code(err) != codes.Unavailable {
			return nil, err
		}
		last = err
	}
	return nil, last
}

// controlPlane is a client of the control plane. The endpoints are used as
// given when one of them is a control-plane member; otherwise (a host or
// dns address was given) the control-plane members are found through the
// registry.
func (c *clients) controlPlane(ctx context.Context) (*cpclient.Client, error) {
	if c.cp != nil {
		return c.cp, nil
	}
	eps := c.g.endpoints
	if ms, err := c.listMembers(ctx); err == nil {
		var cps []string
		for _, m := range ms.GetMembers() {
			if performs(m.GetMember(), roleControlPlane) && m.GetMember().GetGrpcAddress() != "" {
				cps = append(cps, m.GetMember().GetGrpcAddress())
			}
		}
		// Endpoints given that are control-plane members go first, so the
		// operator's choice is honoured; the others follow as fallbacks.
		if len(cps) > 0 {
			var given, rest []string
			for _, a := range cps {
				if slices.Contains(eps, a) {
					given = append(given, a)
				} else {
					rest = append(rest, a)
				}
			}
			eps = append(given, rest...)
		}
	} else if status.Code(err) != codes.Unavailable && status.Code(err) != codes.Unimplemented {
		return nil, err
	}
	// Enough attempts to outlast an election (about 4.5s of backoff at
	// the client's defaults), and to try every endpoint twice.
	cl, err := cpclient.New(cpclient.Config{Endpoints: eps, Dial: c.dial, MaxAttempts: max(8, 2*len(eps)), UnaryAppends: true})
	if err != nil {
		return nil, err
	}
	c.cp = cl
	return cl, nil
}

func performs(m *hivemindv1.ClusterMember, role string) bool {
	return slices.Contains(m.GetRoles().GetPerforms(), role)
}

// roleTargets are the addresses of the members performing role that are
// not known to be failed or gone, --node's first when set.
func (c *clients) roleTargets(ctx context.Context, role string) ([]target, error) {
	ms, err := c.listMembers(ctx)
	if err != nil {
		return nil, err
	}
	var out []target
	for _, v := range ms.GetMembers() {
		m := v.GetMember()
		if c.g.node != "" && m.GetName() != c.g.node {
			continue
		}
		if !performs(m, role) || m.GetGrpcAddress() == "" {
			continue
		}
		switch m.GetState() {
		case hivemindv1.MemberState_MEMBER_STATE_FAILED, hivemindv1.MemberState_MEMBER_STATE_LEFT:
			if c.g.node == "" {
				continue
			}
		}
		out = append(out, target{name: m.GetName(), addr: m.GetGrpcAddress()})
	}
	if len(out) == 0 {
		if c.g.node != "" {
			return nil, usagef("--node %s: no such member performing %s", c.g.node, role)
		}
		return nil, &runError{code: ExitError, msg: fmt.Sprintf("no alive %s member in the cluster", role)}
	}
	return out, nil
}

type target struct{ name, addr string }

// onRole calls fn on the members performing role in turn until one
// answers without UNAVAILABLE.
func onRole[T any](ctx context.Context, c *clients, role string, fn func(*grpc.ClientConn) (T, error)) (T, error) {
	var zero T
	targets, err := c.roleTargets(ctx, role)
	if err != nil {
		return zero, err
	}
	var last error
	for _, t := range targets {
		conn, err := c.conn(t.addr)
		if err != nil {
			return zero, err
		}
		resp, err := fn(conn)
		if err == nil || status.Code(err) != codes.Unavailable {
			return resp, err
		}
		last = fmt.Errorf("%s (%s): %w", t.name, t.addr, err)
	}
	return zero, errors.Unwrap(last)
}
