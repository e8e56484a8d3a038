package fsmevent

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

func member(name string, st hivemindv1.MemberState) []byte {
	return registry.Encode(&hivemindv1.ClusterMember{Name: name, State: st, Incarnation: 1, StateChangedAt: timestamppb.Now()})
}

// The shapes the state machine emits are state; the attacks of issue 13,
// appended with the same type and uri, are not.
func TestKeyAndMember(t *testing.T) {
	failed := member("host1", hivemindv1.MemberState_MEMBER_STATE_FAILED)
	alive := member("host1", hivemindv1.MemberState_MEMBER_STATE_ALIVE)
	host := &hivemindv1.KeyValue{Key: "/nodes/host1/host", Value: []byte("x"), ModRevision: 4}
	tests := []struct {
		name      string
		ev        *hivemindv1.Event
		key, memb bool // accepted by Key, by Member
	}{
		{"put", &hivemindv1.Event{Type: TypePut, Uri: host.Key, Payload: host.Value, Kv: host}, true, false},
		{"delete", &hivemindv1.Event{Type: TypeDelete, Uri: host.Key, Kv: host}, true, false},
		{"forged delete", &hivemindv1.Event{Type: TypeDelete, Uri: host.Key}, false, false},
		{"forged put", &hivemindv1.Event{Type: TypePut, Uri: host.Key, Payload: []byte("y")}, false, false},
		{"kv of another key", &hivemindv1.Event{Type: TypePut, Uri: "/nodes/host2/host", Kv: host}, false, false},
		{"kv event under the registry", &hivemindv1.Event{Type: TypePut, Uri: "/members/host1",
			Kv: &hivemindv1.KeyValue{Key: "/members/host1", Value: alive}}, false, false},
		{"member failed", &hivemindv1.Event{Type: registry.EventFailed, Uri: "/members/host1",
			Kv: &hivemindv1.KeyValue{Key: "/members/host1", Value: failed}}, false, true},
		{"member joined", &hivemindv1.Event{Type: registry.EventJoined, Uri: "/members/host1",
			Kv: &hivemindv1.KeyValue{Key: "/members/host1", Value: alive}}, false, true},
		{"forged member failed", &hivemindv1.Event{Type: registry.EventFailed, Uri: "/members/host1", Source: "host1", Payload: failed}, false, false},
		{"failed event over an alive record", &hivemindv1.Event{Type: registry.EventFailed, Uri: "/members/host1",
			Kv: &hivemindv1.KeyValue{Key: "/members/host1", Value: alive}}, false, false},
		{"record of another name", &hivemindv1.Event{Type: registry.EventFailed, Uri: "/members/host2",
			Kv: &hivemindv1.KeyValue{Key: "/members/host2", Value: failed}}, false, false},
		{"member key nested", &hivemindv1.Event{Type: registry.EventFailed, Uri: "/members/a/host1",
			Kv: &hivemindv1.KeyValue{Key: "/members/a/host1", Value: failed}}, false, false},
		{"bad record", &hivemindv1.Event{Type: registry.EventFailed, Uri: "/members/host1",
			Kv: &hivemindv1.KeyValue{Key: "/members/host1", Value: []byte("{")}}, false, false},
		{"app.note", &hivemindv1.Event{Type: "app.note", Uri: "/notifier/subscriptions/x"}, false, false},
		{"nil", nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Key(tt.ev)
			if tt.key != (err == nil) {
				t.Errorf("Key: %v, want accepted %v", err, tt.key)
			}
			if err != nil && !errors.Is(err, ErrNotState) {
				t.Errorf("Key error %v does not wrap ErrNotState", err)
			}
			if err == nil && (c.KV != tt.ev.GetKv() || c.Deleted != (tt.ev.GetType() == TypeDelete)) {
				t.Errorf("Key: %+v", c)
			}
			m, err := Member(tt.ev)
			if tt.memb != (err == nil) {
				t.Errorf("Member: %v, want accepted %v", err, tt.memb)
			}
			if err == nil && m.GetName() != "host1" {
				t.Errorf("Member: %v", m)
			}
		})
	}
}
