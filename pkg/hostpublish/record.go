package hostpublish

import (
	"google.golang.org/protobuf/proto"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// Key is the tree path of a node's host record.
func Key(node string) string { return "/nodes/" + node + "/host" }

// AppPrefix is where published configuration entries live in the tree.
const AppPrefix = "/app/"

// AppPath is the tree path of the published configuration entry key.
func AppPath(key string) string { return AppPrefix + key }

// Marshal is the record's value in the tree: deterministic, so the same
// record is the same bytes on every write.
func Marshal(r *hivemindv1.HostRecord) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(r)
}

// SameContent reports whether a and b publish the same thing: equal but
// for their sequence numbers and timestamps.
func SameContent(a, b *hivemindv1.HostRecord) bool {
	if a == nil || b == nil {
		return a == b
	}
	ac, bc := proto.CloneOf(a), proto.CloneOf(b)
	ac.Seq, ac.Hlc, bc.Seq, bc.Hlc = 0, 0, 0, 0
	return proto.Equal(ac, bc)
}
