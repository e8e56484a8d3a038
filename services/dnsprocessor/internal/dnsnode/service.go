package dnsnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/miekg/dns"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/hoststate"
	"github.com/hivemind/hivemind/services/dnsprocessor/internal/zone"
)

// Rules are the auth requirements of the DNSProcessor methods. PushHosts
// is for nodes only, whatever scopes an operator token has; the handler
// then admits only nodes performing the host role, each for its own record
// (see PushHosts). An operator changes records through the control plane.
var Rules = map[string]auth.Requirement{
	hivemindv1.DNSProcessor_Status_FullMethodName:       auth.NeedRead,
	hivemindv1.DNSProcessor_Lookup_FullMethodName:       auth.NeedRead,
	hivemindv1.DNSProcessor_HostSnapshot_FullMethodName: auth.NeedRead,
	hivemindv1.DNSProcessor_PushHosts_FullMethodName:    auth.NodeOnly,
}

// service is the DNSProcessor gRPC API over a Node.
type service struct {
	hivemindv1.UnimplementedDNSProcessorServer
	n *Node
}

// Status implements hivemindv1.DNSProcessorServer.
func (s service) Status(ctx context.Context, _ *hivemindv1.DNSProcessorStatusRequest) (*hivemindv1.DNSProcessorStatusResponse, error) {
	n := s.n
	snap := n.state.Snapshot()
	applied := n.state.Revision()
	resp := &hivemindv1.DNSProcessorStatusResponse{
		AppliedRevision:  int64(applied),
		Hosts:            int32(servedHosts(snap)),
		Services:         int32(servedServices(snap)),
		Zone:             n.origin,
		BootstrappedFrom: n.bootstrappedFrom(),
	}
	resp.Ready = resp.BootstrappedFrom != ""
	if last := n.lastUpdate.Load(); last != 0 {
		resp.SinceLastUpdate = durationpb.New(time.Since(time.Unix(0, last)))
	}
	// The control plane's revision, when it answers quickly; a dns
	// processor is asked for its status most when the control plane is in
	// trouble, so this must not hang.
	if cp := n.cfg.ControlPlane(); cp != nil {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if st, err := cp.Status(cctx); err == nil {
			resp.LagRevisions = max(0, st.GetHeader().GetRevision()-int64(applied))
		} else {
			resp.LagRevisions = -1
		}
	} else {
		resp.LagRevisions = -1
	}
	return resp, nil
}

func servedHosts(snap *hoststate.Snapshot) int {
	n := 0
	for h := range snap.All() {
		if !h.Failed {
			n++
		}
	}
	return n
}

// servedServices counts the distinct service names with a serving instance.
func servedServices(snap *hoststate.Snapshot) int {
	names := map[string]bool{}
	for h := range snap.All() {
		if h.Failed {
			continue
		}
		for _, svc := range h.Services {
			if svc.Health.Serving() {
				names[strings.ToLower(svc.Name)] = true
			}
		}
	}
	return len(names)
}

// Lookup implements hivemindv1.DNSProcessorServer.
func (s service) Lookup(_ context.Context, req *hivemindv1.LookupRequest) (*hivemindv1.LookupResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name: must not be empty")
	}
	if _, ok := dns.IsDomainName(req.GetName()); !ok {
		return nil, status.Errorf(codes.InvalidArgument, "name: %q is not a domain name", req.GetName())
	}
	typ := strings.ToUpper(req.GetType())
	if typ == "" {
		typ = "A"
	}
	qtype, ok := dns.StringToType[typ]
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "type: %q is not a DNS type (A, AAAA, SRV, TXT, SOA, NS, ANY)", req.GetType())
	}
	z := s.n.handler.Zone()
	if z == nil {
		return nil, status.Error(codes.Unavailable, "not bootstrapped yet: nothing to answer from")
	}
	res := z.Lookup(req.GetName(), qtype)
	resp := &hivemindv1.LookupResponse{
		Rcode:      dns.RcodeToString[res.Rcode],
		Revision:   int64(z.Revision()),
		HostSeqs:   map[string]uint64{},
		Answer:     present(res.Answer),
		Additional: present(res.Extra),
	}
	if res.Rcode == dns.RcodeSuccess && len(res.Answer) == 0 {
		resp.Answer = nil
	}
	snap := z.Snapshot() // the hosts the zone was made from, not newer ones
	for _, host := range contributors(z, res, snap) {
		resp.HostSeqs[host] = snap.Seq(host)
	}
	return resp, nil
}

func present(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.String())
	}
	return out
}

// contributors names the hosts an answer comes from: owners and targets
// under node.<zone>, and hosts whose addresses it lists.
func contributors(z *zone.Zone, res zone.Result, snap *hoststate.Snapshot) []string {
	nodes := "." + "node." + z.Origin()
	seen := map[string]bool{}
	var out []string
	add := func(name string) {
		if h, ok := strings.CutSuffix(dns.CanonicalName(name), nodes); ok && !strings.Contains(h, ".") && !seen[h] {
			if _, held := snap.Host(h); held {
				seen[h] = true
				out = append(out, h)
			}
		}
	}
	addrs := map[string]bool{}
	for _, rr := range append(append([]dns.RR{}, res.Answer...), res.Extra...) {
		add(rr.Header().Name)
		switch rr := rr.(type) {
		case *dns.SRV:
			add(rr.Target)
		case *dns.A:
			addrs[rr.A.String()] = true
		case *dns.AAAA:
			addrs[rr.AAAA.String()] = true
		}
	}
	if len(addrs) > 0 {
		for h := range snap.All() {
			for _, a := range h.Addrs {
				if !h.Failed && addrs[a.String()] && !seen[h.Name] {
					seen[h.Name] = true
					out = append(out, h.Name)
				}
			}
		}
	}
	return out
}

// PushHosts implements hivemindv1.DNSProcessorServer: the fast path. Only
// a node performing the host role may push, and only its own record (the
// name comes from its credential, never from the record): any other record
// ends the stream at once with PERMISSION_DENIED naming it, and neither it
// nor anything after it is applied. Since a stream carries one caller,
// whatever it applied before was that host's own record.
//
// Each record is applied on its own, when its seq is newer than what is
// held. A record that is invalid is skipped and the rest of the stream
// still applied; the stream then ends with INVALID_ARGUMENT naming the
// first bad record and field.
func (s service) PushHosts(stream hivemindv1.DNSProcessor_PushHostsServer) error {
	ctx := stream.Context()
	id, _ := auth.FromContext(ctx)
	var applied, bad int64
	var first error
	for i := 0; ; i++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		rec := req.GetHost()
		if rec != nil { // a missing record is invalid, not foreign: push says so
			if err := mayPush(id, rec); err != nil {
				s.n.log.Warn("pushed host record refused", "index", i, "node", rec.GetNode(), "caller", id.Name, "err", err)
				return status.Errorf(codes.PermissionDenied, "record %d (node %q): %v; nothing after it applied (%d records of %s applied before it)", i, rec.GetNode(), err, applied, id.Name)
			}
		}
		err = s.push(rec)
		if err == nil {
			applied++
			continue
		}
		bad++
		if first == nil {
			first = fmt.Errorf("record %d (node %q): %w", i, rec.GetNode(), err)
		}
		s.n.log.Warn("pushed host record refused", "index", i, "node", rec.GetNode(), "err", err)
	}
	if first != nil {
		return status.Errorf(codes.InvalidArgument, "%v (%d bad records, %d good ones applied)", first, bad, applied)
	}
	return stream.SendAndClose(&hivemindv1.PushHostsResponse{Applied: applied})
}

// mayPush says why id may not push rec, or nil: a node performing the
// host role pushes its own record only (the Kubernetes node authorizer's
// rule for a kubelet and its Node).
func mayPush(id auth.Identity, rec *hivemindv1.HostRecord) error {
	switch {
	case id.Name == "":
		return errors.New("the call has no authenticated caller")
	case id.Kind != auth.KindNode:
		return fmt.Errorf("%s %s may not push host records: only host nodes push, each its own record", id.Kind, id.Name)
	case !id.Performs(auth.RoleHost):
		return fmt.Errorf("node %s does not perform the %q role (it performs %v): only host nodes push records", id.Name, auth.RoleHost, id.Roles)
	case rec.GetNode() != id.Name:
		return fmt.Errorf("node %s may push only its own record, not %q's", id.Name, rec.GetNode())
	}
	return nil
}

// push applies one pushed record; a stale one is no error.
func (s service) push(rec *hivemindv1.HostRecord) error {
	if rec == nil {
		return invalid("host", "missing")
	}
	u, err := update(rec, "", 0)
	if err != nil {
		return err
	}
	changed, err := s.n.state.Apply(u)
	if err != nil {
		return err
	}
	if changed {
		s.n.touch()
	}
	return nil
}

// HostSnapshot implements hivemindv1.DNSProcessorServer. Failed hosts are
// left out: a HostRecord cannot say a host is failed, and a peer serving
// them would answer for dead hosts. A removed host is listed as gone with
// its last seq, so the peer still drops stale records for it.
func (s service) HostSnapshot(context.Context, *hivemindv1.HostSnapshotRequest) (*hivemindv1.HostSnapshotResponse, error) {
	if s.n.bootstrappedFrom() == "" {
		return nil, status.Error(codes.Unavailable, "not bootstrapped yet: ask another dns processor")
	}
	snap := s.n.state.Snapshot()
	b := snap.Bootstrap()
	resp := &hivemindv1.HostSnapshotResponse{Revision: int64(b.Revision)}
	for i := range b.Hosts {
		if h := &b.Hosts[i]; !h.Failed {
			resp.Hosts = append(resp.Hosts, recordOf(h))
		}
	}
	for name, seq := range b.Removed {
		resp.Hosts = append(resp.Hosts, &hivemindv1.HostRecord{Node: name, Seq: seq, Gone: true})
	}
	return resp, nil
}
