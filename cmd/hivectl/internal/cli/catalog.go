package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Where the catalog lives in the tree: host records at /nodes/<node>/host
// (written by each host agent), announcements at /srv/<service>/<instance>.
const (
	nodesPrefix    = "/nodes/"
	hostKeySuffix  = "/host"
	announcePrefix = "/srv/"
)

// rangeAll reads every key under prefix, page by page, and the revision
// of the first page.
func rangeAll(ctx context.Context, cp *cpclient.Client, prefix string) ([]*hivemindv1.KeyValue, int64, error) {
	var kvs []*hivemindv1.KeyValue
	var rev int64
	after := ""
	for {
		resp, err := cp.Range(ctx, &hivemindv1.RangeRequest{Prefix: prefix, StartAfter: after})
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.GetHeader().GetRevision()
		}
		kvs = append(kvs, resp.GetKvs()...)
		if !resp.GetMore() || len(resp.GetKvs()) == 0 {
			return kvs, rev, nil
		}
		after = kvs[len(kvs)-1].GetKey()
	}
}

// hostRecords are the host records in the tree, by node name.
func hostRecords(ctx context.Context, cp *cpclient.Client) ([]*hivemindv1.HostRecord, int64, error) {
	kvs, rev, err := rangeAll(ctx, cp, nodesPrefix)
	if err != nil {
		return nil, 0, err
	}
	var out []*hivemindv1.HostRecord
	for _, kv := range kvs {
		rest := strings.TrimPrefix(kv.GetKey(), nodesPrefix)
		node, ok := strings.CutSuffix(rest, hostKeySuffix)
		if !ok || node == "" || strings.Contains(node, "/") {
			continue
		}
		r := &hivemindv1.HostRecord{}
		if err := proto.Unmarshal(kv.GetValue(), r); err != nil {
			return nil, 0, fmt.Errorf("host record %s is not a HostRecord: %w", kv.GetKey(), err)
		}
		out = append(out, r)
	}
	return out, rev, nil
}

type serviceOut struct {
	Service  string   `json:"service"`
	Instance string   `json:"instance"`
	Node     string   `json:"node"`
	Address  string   `json:"address"`
	Port     uint32   `json:"port,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	Status   string   `json:"status"`
	// Source is "host" for a service of a host agent's configuration and
	// "announced" for an /srv/ announcement.
	Source string `json:"source"`
}

type hostOut struct {
	Node      string            `json:"node"`
	Addresses []string          `json:"addresses"`
	Tags      []string          `json:"tags,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Services  []*serviceOut     `json:"services"`
	Seq       uint64            `json:"seq"`
	Gone      bool              `json:"gone,omitempty"`
}

func toHost(r *hivemindv1.HostRecord) *hostOut {
	h := &hostOut{Node: r.GetNode(), Addresses: append([]string{}, r.GetAddresses()...), Tags: r.GetTags(), Meta: r.GetMeta(), Seq: r.GetSeq(), Gone: r.GetGone(), Services: []*serviceOut{}}
	addr := ""
	if len(r.GetAddresses()) > 0 {
		addr = r.GetAddresses()[0]
	}
	for _, s := range r.GetServices() {
		id := s.GetId()
		if id == "" {
			id = s.GetName()
		}
		a := addr
		if a != "" && s.GetPort() != 0 {
			a = net.JoinHostPort(a, strconv.Itoa(int(s.GetPort())))
		}
		h.Services = append(h.Services, &serviceOut{
			Service: s.GetName(), Instance: id, Node: r.GetNode(), Address: a, Port: s.GetPort(),
			Tags: s.GetTags(), Status: healthName(s.GetStatus()), Source: "host",
		})
	}
	return h
}

func hostsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "hosts",
		Short: "List the hosts and their records as the control plane holds them",
		Example: `  hivectl hosts
  hivectl hosts -o json`,
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
			recs, rev, err := hostRecords(ctx, cp)
			if err != nil {
				return err
			}
			hosts := []*hostOut{}
			for _, r := range recs {
				hosts = append(hosts, toHost(r))
			}
			return g.print(struct {
				Revision int64      `json:"revision"`
				Hosts    []*hostOut `json:"hosts"`
			}{rev, hosts}, func(w io.Writer) {
				row(w, "NODE", "ADDRESSES", "SERVICES", "SEQ", "GONE")
				for _, h := range hosts {
					var names []string
					for _, s := range h.Services {
						names = append(names, s.Service+"("+s.Status+")")
					}
					row(w, h.Node, orDash(strings.Join(h.Addresses, ",")), orDash(strings.Join(names, ",")), h.Seq, h.Gone)
				}
			})
		}),
	}
}

func servicesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "services [SERVICE]",
		Short: "List the catalog: services of hosts and announced instances",
		Long: `List every service instance in the catalog: those in host agents' records
(with their health) and those announced under /srv/, or only SERVICE's.`,
		Example: `  hivectl services
  hivectl services web -o json`,
		Args: rangeArgs(0, "SERVICE"),
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
			recs, rev, err := hostRecords(ctx, cp)
			if err != nil {
				return err
			}
			out := []*serviceOut{}
			for _, r := range recs {
				if r.GetGone() {
					continue
				}
				out = append(out, toHost(r).Services...)
			}
			prefix := announcePrefix
			if len(args) == 1 {
				prefix += args[0] + "/"
			}
			kvs, _, err := rangeAll(ctx, cp, prefix)
			if err != nil {
				return err
			}
			for _, kv := range kvs {
				a := &hivemindv1.Announcement{}
				if err := proto.Unmarshal(kv.GetValue(), a); err != nil {
					return fmt.Errorf("announcement %s is not an Announcement: %w", kv.GetKey(), err)
				}
				out = append(out, &serviceOut{Service: a.GetService(), Instance: a.GetInstance(), Node: a.GetNode(), Address: a.GetAddress(), Status: "announced", Source: "announced"})
			}
			if len(args) == 1 {
				kept := out[:0]
				for _, s := range out {
					if s.Service == args[0] {
						kept = append(kept, s)
					}
				}
				out = kept
			}
			sort.SliceStable(out, func(i, j int) bool {
				if out[i].Service != out[j].Service {
					return out[i].Service < out[j].Service
				}
				return out[i].Node+"/"+out[i].Instance < out[j].Node+"/"+out[j].Instance
			})
			return g.print(struct {
				Revision int64         `json:"revision"`
				Services []*serviceOut `json:"services"`
			}{rev, out}, func(w io.Writer) {
				row(w, "SERVICE", "INSTANCE", "NODE", "ADDRESS", "STATUS", "SOURCE")
				for _, s := range out {
					row(w, s.Service, s.Instance, orDash(s.Node), orDash(s.Address), s.Status, s.Source)
				}
			})
		}),
	}
}

type announcementOut struct {
	Service   string            `json:"service"`
	Instance  string            `json:"instance"`
	Address   string            `json:"address"`
	Node      string            `json:"node"`
	Master    bool              `json:"master,omitempty"`
	TTL       string            `json:"ttl"`
	UpdatedAt string            `json:"updated_at"`
	Meta      map[string]string `json:"meta,omitempty"`
}

func toAnnouncement(a *hivemindv1.Announcement) *announcementOut {
	return &announcementOut{Service: a.GetService(), Instance: a.GetInstance(), Address: a.GetAddress(), Node: a.GetNode(),
		Master: a.GetMaster(), TTL: dur(a.GetTtl()), UpdatedAt: ts(a.GetUpdatedAt()), Meta: a.GetMeta()}
}

func discoverCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "discover SERVICE",
		Short: "The live instances of an announced service",
		Long: `Ask a host agent (the first alive one, or --node) for the live instances
of SERVICE announced under /srv/. No instance exits with 3.`,
		Example: `  hivectl discover web
  hivectl discover web -o json --node host1`,
		Args: exactArgs("SERVICE"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := onRole(ctx, cl, roleHost, func(conn *grpc.ClientConn) (*hivemindv1.DiscoverResponse, error) {
				return hivemindv1.NewHostClient(conn).Discover(ctx, &hivemindv1.DiscoverRequest{Service: args[0]})
			})
			if err != nil {
				return err
			}
			out := []*announcementOut{}
			for _, a := range resp.GetInstances() {
				out = append(out, toAnnouncement(a))
			}
			if err := g.print(struct {
				Service   string             `json:"service"`
				Revision  int64              `json:"revision"`
				Instances []*announcementOut `json:"instances"`
			}{args[0], resp.GetRevision(), out}, func(w io.Writer) {
				row(w, "INSTANCE", "ADDRESS", "NODE", "MASTER", "TTL", "UPDATED")
				for _, a := range out {
					row(w, a.Instance, a.Address, orDash(a.Node), a.Master, a.TTL, a.UpdatedAt)
				}
			}); err != nil {
				return err
			}
			if len(out) == 0 {
				return notFoundf("no live instance of %s (revision %d)", args[0], resp.GetRevision())
			}
			return nil
		}),
	}
}

func announceCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	var meta []string
	var master bool
	cmd := &cobra.Command{
		Use:   "announce SERVICE INSTANCE ADDRESS",
		Short: "Announce (or renew) an instance of a service under /srv/",
		Long: `Register /srv/SERVICE/INSTANCE at ADDRESS (host:port) through a host agent
(the first alive one, or --node). It expires unless announced again within
--ttl.`,
		Example: `  hivectl announce web web-1 10.0.0.5:8080 --ttl 1m
  hivectl announce db primary 10.0.0.9:5432 --master --meta version=16`,
		Args: exactArgs("SERVICE", "INSTANCE", "ADDRESS"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			m, err := parsePairs("--meta", meta)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			req := &hivemindv1.AnnounceRequest{Announcement: &hivemindv1.Announcement{
				Service: args[0], Instance: args[1], Address: args[2], Meta: m, Master: master, Ttl: durationpb.New(ttl),
			}}
			resp, err := onRole(ctx, cl, roleHost, func(conn *grpc.ClientConn) (*hivemindv1.AnnounceResponse, error) {
				return hivemindv1.NewHostClient(conn).Announce(ctx, req)
			})
			if err != nil {
				return err
			}
			a := toAnnouncement(resp.GetAnnouncement())
			return g.print(struct {
				Revision     int64            `json:"revision"`
				Announcement *announcementOut `json:"announcement"`
			}{resp.GetRevision(), a}, func(w io.Writer) {
				row(w, fmt.Sprintf("announced %s/%s at %s (ttl %s, by %s), revision %d", a.Service, a.Instance, a.Address, a.TTL, a.Node, resp.GetRevision()))
			})
		}),
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 30*time.Second, "the instance expires unless renewed within this")
	cmd.Flags().StringSliceVar(&meta, "meta", nil, "key=value metadata (repeat or comma-separate)")
	cmd.Flags().BoolVar(&master, "master", false, "the instance is the service's master")
	return cmd
}

func withdrawCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "withdraw SERVICE INSTANCE",
		Short:   "Withdraw an announced instance",
		Example: `  hivectl withdraw web web-1`,
		Args:    exactArgs("SERVICE", "INSTANCE"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := onRole(ctx, cl, roleHost, func(conn *grpc.ClientConn) (*hivemindv1.WithdrawResponse, error) {
				return hivemindv1.NewHostClient(conn).Withdraw(ctx, &hivemindv1.WithdrawRequest{Service: args[0], Instance: args[1]})
			})
			if err != nil {
				return err
			}
			return g.print(struct {
				Revision int64 `json:"revision"`
			}{resp.GetRevision()}, func(w io.Writer) {
				row(w, fmt.Sprintf("withdrawn %s/%s, revision %d", args[0], args[1], resp.GetRevision()))
			})
		}),
	}
}

func dnsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "dns",
		Short:   "Ask a dns processor",
		Example: `  hivectl dns lookup web.service.hive`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "lookup NAME [TYPE]",
		Short: "What NAME resolves to, and the revision the answer comes from",
		Long: `Ask a dns processor (the first alive one, or --node) what NAME resolves to
for TYPE (A, AAAA, SRV, TXT, SOA or NS; default A), with the revision of
the newest host state the answer comes from. NXDOMAIN exits with 3.`,
		Example: `  hivectl dns lookup host1.node.hive
  hivectl dns lookup _web._tcp.service.hive SRV -o json`,
		Args: rangeArgs(1, "NAME", "TYPE"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			typ := "A"
			if len(args) == 2 {
				typ = strings.ToUpper(args[1])
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := onRole(ctx, cl, roleDNS, func(conn *grpc.ClientConn) (*hivemindv1.LookupResponse, error) {
				return hivemindv1.NewDNSProcessorClient(conn).Lookup(ctx, &hivemindv1.LookupRequest{Name: args[0], Type: typ})
			})
			if err != nil {
				return err
			}
			if err := g.print(struct {
				Name       string            `json:"name"`
				Type       string            `json:"type"`
				Rcode      string            `json:"rcode"`
				Revision   int64             `json:"revision"`
				Answer     []string          `json:"answer"`
				Additional []string          `json:"additional,omitempty"`
				HostSeqs   map[string]uint64 `json:"host_seqs,omitempty"`
			}{args[0], typ, resp.GetRcode(), resp.GetRevision(), append([]string{}, resp.GetAnswer()...), resp.GetAdditional(), resp.GetHostSeqs()}, func(w io.Writer) {
				row(w, fmt.Sprintf("%s %s: %s, revision %d", args[0], typ, resp.GetRcode(), resp.GetRevision()))
				for _, a := range resp.GetAnswer() {
					row(w, a)
				}
				for _, a := range resp.GetAdditional() {
					row(w, a+"\t(additional)")
				}
			}); err != nil {
				return err
			}
			if resp.GetRcode() == "NXDOMAIN" {
				return notFoundf("%s: NXDOMAIN", args[0])
			}
			return nil
		}),
	})
	return cmd
}

// parsePairs reads key=value flags into a map.
func parsePairs(flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want key=value", flag, p)
		}
		m[k] = v
	}
	return m, nil
}
