package dnsnode

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/secret"
)

// Issue 13: a write-scoped operator token pushed host records for any
// host, even new names. PushHosts now takes records only from nodes
// performing the host role, each for its own record; a stream with a
// foreign record is refused from that record on, naming it and why.
func TestPushHostsOnlyOwnRecord(t *testing.T) {
	n := startNode(t, "dns1", &switchable{}, nil, secret.Secret{})
	held := func(host string) bool { _, ok := n.State().Snapshot().Host(host); return ok }

	tests := []struct {
		name   string
		client hivemindv1.DNSProcessorClient
		recs   []*hivemindv1.HostRecord
		msg    []string // parts of the PERMISSION_DENIED message
		unseen []string // hosts that must not be held after it
	}{
		{"operator with write", n.Client, []*hivemindv1.HostRecord{hostRecord("host-1", 1, "6.6.6.6")},
			[]string{"nodes only", "ops"}, []string{"host-1"}},
		{"operator pushing a new name", n.Client, []*hivemindv1.HostRecord{hostRecord("new-name", 1, "6.6.6.6")},
			[]string{"nodes only"}, []string{"new-name"}},
		{"host-2 pushing host-1's record", n.clientAs(t, "host-2", auth.RoleHost), []*hivemindv1.HostRecord{hostRecord("host-1", 1, "6.6.6.6")},
			[]string{`record 0 (node "host-1")`, "only its own record"}, []string{"host-1"}},
		{"a foreign record first refuses the rest", n.clientAs(t, "host-2", auth.RoleHost),
			[]*hivemindv1.HostRecord{hostRecord("host-1", 1, "6.6.6.6"), hostRecord("host-2", 1, "10.0.0.2")},
			[]string{`record 0 (node "host-1")`}, []string{"host-1", "host-2"}},
		{"a dns node", n.clientAs(t, "dns2", auth.RoleDNS), []*hivemindv1.HostRecord{hostRecord("dns2", 1, "10.0.0.9")},
			[]string{`record 0 (node "dns2")`, `does not perform the "host" role`}, []string{"dns2"}},
		{"a node without roles", n.clientAs(t, "host-3"), []*hivemindv1.HostRecord{hostRecord("host-3", 1, "10.0.0.3")},
			[]string{`record 0 (node "host-3")`, `does not perform the "host" role`}, []string{"host-3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := push(t, tt.client, tt.recs...)
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("push: %v, want PERMISSION_DENIED", err)
			}
			for _, m := range tt.msg {
				if !strings.Contains(status.Convert(err).Message(), m) {
					t.Errorf("message %q does not say %q", status.Convert(err).Message(), m)
				}
			}
			for _, h := range tt.unseen {
				if held(h) {
					t.Errorf("%s is held after a refused push", h)
				}
			}
		})
	}

	// A host pushes its own record.
	resp, err := n.pushAs(t, "host-1", hostRecord("host-1", 1, "10.0.0.1"))
	if err != nil || resp.GetApplied() != 1 || !served(n.State().Snapshot(), "host-1", "10.0.0.1") {
		t.Fatalf("host-1 pushing its own record: %v, %v", resp, err)
	}
	// Its own record and then another's: the foreign one and what follows
	// are refused; host-1's record stays as host-1 pushed it.
	_, err = n.pushAs(t, "host-2", hostRecord("host-2", 1, "10.0.0.2"), hostRecord("host-1", 9, "6.6.6.6"), hostRecord("host-2", 2, "10.0.0.22"))
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `record 1 (node "host-1")`) {
		t.Errorf("host-2 pushing its own and host-1's record: %v, want PERMISSION_DENIED naming record 1", err)
	}
	snap := n.State().Snapshot()
	if !served(snap, "host-1", "10.0.0.1") || snap.Seq("host-1") != 1 || snap.Seq("host-2") == 2 {
		t.Errorf("after the refused stream: %v, seqs host-1 %d host-2 %d", snap.Hosts(), snap.Seq("host-1"), snap.Seq("host-2"))
	}
}

// mayPush as a table: who may push which record, and each refusal says
// who asked and why.
func TestMayPush(t *testing.T) {
	host1 := auth.Identity{Name: "host-1", Kind: auth.KindNode, Roles: []string{auth.RoleHost}}
	for _, tt := range []struct {
		name string
		id   auth.Identity
		node string
		why  string // "" for allowed
	}{
		{"own record", host1, "host-1", ""},
		{"host with more roles", auth.Identity{Name: "h", Kind: auth.KindNode, Roles: []string{auth.RoleDNS, auth.RoleHost}}, "h", ""},
		{"another host's record", host1, "host-2", "only its own record"},
		{"no caller", auth.Identity{}, "host-1", "no authenticated caller"},
		{"admin operator", auth.Identity{Name: "root", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeAdmin}}, "root", "operator root may not push"},
		{"operator named like the host", auth.Identity{Name: "host-1", Kind: auth.KindOperator, Scopes: []auth.Scope{auth.ScopeWrite}, Roles: []string{auth.RoleHost}}, "host-1", "operator host-1 may not push"},
		{"control-plane node", auth.Identity{Name: "cp1", Kind: auth.KindNode, Roles: []string{auth.RoleControlPlane}}, "cp1", `does not perform the "host" role`},
	} {
		err := mayPush(tt.id, &hivemindv1.HostRecord{Node: tt.node})
		if tt.why == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("%s: %v, want a refusal saying %q", tt.name, err, tt.why)
		}
	}
}
