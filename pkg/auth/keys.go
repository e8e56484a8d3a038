package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NodesPrefix is the part of the resource tree where each node owns its
// own subtree, /nodes/<name>.
const NodesPrefix = "/nodes/"

// CheckKeyWrite returns PERMISSION_DENIED when the caller in ctx may not
// write key: a node writes under /nodes/ only within /nodes/<its name>.
// Operators (whose write scope the Policy has checked) may write anywhere.
// A call without an identity is refused.
func CheckKeyWrite(ctx context.Context, key string) error {
	id, err := writer(ctx, key)
	if err != nil || id.Kind != KindNode || !strings.HasPrefix(key, NodesPrefix) {
		return err
	}
	owner, _, _ := strings.Cut(key[len(NodesPrefix):], "/")
	if owner != id.Name {
		return status.Errorf(codes.PermissionDenied, "node %s may not write %s: under %s a node writes only %s%s/", id.Name, key, NodesPrefix, NodesPrefix, id.Name)
	}
	return nil
}

// CheckPrefixWrite is CheckKeyWrite for an operation on every key that
// starts with prefix (a prefix delete): a node's prefix must start with its
// own /nodes/<name>/ or cover no key under /nodes/ at all.
func CheckPrefixWrite(ctx context.Context, prefix string) error {
	id, err := writer(ctx, prefix)
	if err != nil || id.Kind != KindNode {
		return err
	}
	own := NodesPrefix + id.Name + "/"
	// "/nodes/<name>" without the slash would also cover "/nodes/<name>0".
	if strings.HasPrefix(prefix, own) {
		return nil
	}
	// The prefix reaches into /nodes/ (or above it) without being the
	// node's own subtree: it would also cover other nodes' keys.
	if strings.HasPrefix(prefix, NodesPrefix) || strings.HasPrefix(NodesPrefix, prefix) {
		return status.Errorf(codes.PermissionDenied, "node %s may not write every key under %q: it covers other nodes' keys; a node writes only under %s", id.Name, prefix, own)
	}
	return nil
}

func writer(ctx context.Context, what string) (Identity, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return Identity{}, status.Errorf(codes.PermissionDenied, "write to %s without an authenticated caller", what)
	}
	return id, nil
}
