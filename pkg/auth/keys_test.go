package auth

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
)

func TestNodesOwnTheirSubtree(t *testing.T) {
	node := NewContext(context.Background(), Identity{Name: "host-1", Kind: KindNode, Scopes: nodeScopes})
	op := NewContext(context.Background(), Identity{Name: "ops", Kind: KindOperator, Scopes: []Scope{ScopeWrite}})
	for _, tc := range []struct {
		key  string
		node bool // may host-1 write it
	}{
		{"/nodes/host-1", true},
		{"/nodes/host-1/", true},
		{"/nodes/host-1/addresses/eth0", true},
		{"/nodes/host-2/addresses/eth0", false},
		{"/nodes/host-10", false},
		{"/nodes/host-", false},
		{"/nodes/", false},
		{"/nodes/host-1x/a", false},
		{"/app/web/config", true},
		{"/nodes", true},
	} {
		err := CheckKeyWrite(node, tc.key)
		if tc.node && err != nil {
			t.Errorf("host-1 may not write %s: %v", tc.key, err)
		}
		if !tc.node {
			wantCode(t, err, codes.PermissionDenied, "/nodes/host-1/")
		}
		if err := CheckKeyWrite(op, tc.key); err != nil {
			t.Errorf("operator may not write %s: %v", tc.key, err)
		}
	}
	wantCode(t, CheckKeyWrite(context.Background(), "/app/x"), codes.PermissionDenied, "without an authenticated caller")

	for _, tc := range []struct {
		prefix string
		node   bool
	}{
		{"/nodes/host-1/", true},
		{"/nodes/host-1", false}, // also covers host-10
		{"/nodes/host-1/addr", true},
		{"/nodes/host-", false}, // also covers host-10, host-2…
		{"/nodes/", false},
		{"/nodes", false},
		{"/no", false},
		{"/", false},
		{"/app/", true},
	} {
		err := CheckPrefixWrite(node, tc.prefix)
		if tc.node && err != nil {
			t.Errorf("host-1 may not write under %q: %v", tc.prefix, err)
		}
		if !tc.node {
			wantCode(t, err, codes.PermissionDenied, "other nodes")
		}
		if err := CheckPrefixWrite(op, tc.prefix); err != nil {
			t.Errorf("operator may not write under %q: %v", tc.prefix, err)
		}
	}
}
