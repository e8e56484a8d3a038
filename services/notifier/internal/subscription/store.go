// Package subscription keeps the notifier's subscriptions ("sensors") and
// their delivery records in the control plane's tree, so every notifier
// replica sees the same set:
//
//	/notifier/subscriptions/<name>             hivemind.v1.Subscription, secret left out
//	/notifier/secrets/<name>                   the subscription's signing secret
//	/notifier/deliveries/<name>/<delivery-id>  hivemind.v1.Delivery
//
// The secret lives apart from the record so that reading subscriptions
// does not reveal it: the control plane lets only admins and notifier
// nodes read /notifier/secrets/. A record and its secret are written and
// deleted in one transaction. Records stored before the split carry the
// secret inline and still load; a separate secret wins over an inline one.
//
// Values are deterministic protobuf, so the same subscription written by
// two replicas is the same bytes. It also validates a subscription and
// decides which events it selects.
package subscription

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

// The prefixes of the notifier's state in the tree, inside the namespace
// the control plane keeps for notifier nodes (auth.NotifierPrefix); its
// secrets are the part only they and admins read.
const (
	SubscriptionsPrefix = auth.NotifierPrefix + "subscriptions/"
	SecretsPrefix       = auth.NotifierSecretsPrefix
	DeliveriesPrefix    = auth.NotifierPrefix + "deliveries/"
)

// Key is where subscription name is stored.
func Key(name string) string { return SubscriptionsPrefix + name }

// SecretKey is where the signing secret of subscription name is stored.
func SecretKey(name string) string { return SecretsPrefix + name }

// WithSecret returns sub with secret set when secret is not empty (a
// separate secret wins over one stored inline), and sub itself otherwise.
// sub is not modified: a loaded subscription may be in use elsewhere.
func WithSecret(sub *hivemindv1.Subscription, secret string) *hivemindv1.Subscription {
	if secret == "" || sub.GetSecret() == secret {
		return sub
	}
	out := proto.Clone(sub).(*hivemindv1.Subscription)
	out.Secret = secret
	return out
}

// DeliveryKey is where the record of delivery id of subscription sub is
// stored.
func DeliveryKey(sub, id string) string { return DeliveriesPrefix + sub + "/" + id }

// ErrExists is returned by Create for a name already taken.
var ErrExists = errors.New("subscription already exists")

// ErrNotFound is returned for a subscription that does not exist.
var ErrNotFound = errors.New("subscription not found")

// ControlPlane is what the store needs of the control plane
// (*cpclient.Client has it).
type ControlPlane interface {
	Get(context.Context, *hivemindv1.GetRequest) (*hivemindv1.GetResponse, error)
	Range(context.Context, *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error)
	Put(context.Context, *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error)
	Txn(context.Context, *hivemindv1.TxnRequest) (*hivemindv1.TxnResponse, error)
}

// Store reads and writes subscriptions and delivery records.
type Store struct {
	cp ControlPlane
}

// NewStore returns a Store over cp.
func NewStore(cp ControlPlane) *Store { return &Store{cp: cp} }

var marshal = proto.MarshalOptions{Deterministic: true}

// Create stores sub unless its name is taken (ErrExists): the record
// without its secret, and the secret at SecretKey, in one transaction. It
// returns the revision that committed it.
func (s *Store) Create(ctx context.Context, sub *hivemindv1.Subscription) (int64, error) {
	rec := proto.Clone(sub).(*hivemindv1.Subscription)
	rec.Secret = ""
	b, err := marshal.Marshal(rec)
	if err != nil {
		return 0, err
	}
	key := Key(sub.GetName())
	var ops []*hivemindv1.TxnOp
	if sub.GetSecret() != "" {
		// The secret first: a replica applying the record has it already.
		ops = append(ops, &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: SecretKey(sub.GetName()), Value: []byte(sub.GetSecret())}}})
	}
	ops = append(ops, &hivemindv1.TxnOp{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: key, Value: b}}})
	resp, err := s.cp.Txn(ctx, &hivemindv1.TxnRequest{
		Compares: []*hivemindv1.Compare{{Key: key, Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: 0}},
		Success:  ops,
	})
	if err != nil {
		return 0, err
	}
	if !resp.GetSucceeded() {
		return 0, fmt.Errorf("%w: %s", ErrExists, sub.GetName())
	}
	return resp.GetHeader().GetRevision(), nil
}

// Get returns the stored subscription, with its secret, and the state of
// its record's key.
func (s *Store) Get(ctx context.Context, name string) (*hivemindv1.Subscription, *hivemindv1.KeyValue, error) {
	sub, kv, err := s.record(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	resp, err := s.cp.Get(ctx, &hivemindv1.GetRequest{Key: SecretKey(name)})
	if err != nil {
		return nil, nil, err
	}
	return WithSecret(sub, string(resp.GetKv().GetValue())), kv, nil
}

// record returns the subscription as its record stores it (an inline
// secret only from before the split) and the record's key.
func (s *Store) record(ctx context.Context, name string) (*hivemindv1.Subscription, *hivemindv1.KeyValue, error) {
	resp, err := s.cp.Get(ctx, &hivemindv1.GetRequest{Key: Key(name)})
	if err != nil {
		return nil, nil, err
	}
	if !resp.GetFound() {
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	sub, err := Unmarshal(resp.GetKv().GetValue())
	return sub, resp.GetKv(), err
}

// Unmarshal decodes a stored subscription.
func Unmarshal(b []byte) (*hivemindv1.Subscription, error) {
	sub := &hivemindv1.Subscription{}
	if err := proto.Unmarshal(b, sub); err != nil {
		return nil, fmt.Errorf("decode subscription: %w", err)
	}
	return sub, nil
}

// List returns every subscription in name order, with their secrets,
// their records' keys, and the revision the list reflects. The secrets are
// read after the records, so every listed subscription's secret is there
// (a secret goes only with its record, in the same transaction).
func (s *Store) List(ctx context.Context) ([]*hivemindv1.Subscription, []*hivemindv1.KeyValue, int64, error) {
	kvs, rev, err := s.rangeAll(ctx, SubscriptionsPrefix)
	if err != nil {
		return nil, nil, 0, err
	}
	secretKVs, _, err := s.rangeAll(ctx, SecretsPrefix)
	if err != nil {
		return nil, nil, 0, err
	}
	secrets := make(map[string]string, len(secretKVs))
	for _, kv := range secretKVs {
		secrets[strings.TrimPrefix(kv.GetKey(), SecretsPrefix)] = string(kv.GetValue())
	}
	subs := make([]*hivemindv1.Subscription, 0, len(kvs))
	for _, kv := range kvs {
		sub, err := Unmarshal(kv.GetValue())
		if err != nil {
			return nil, nil, 0, fmt.Errorf("%s: %w", kv.GetKey(), err)
		}
		subs = append(subs, WithSecret(sub, secrets[strings.TrimPrefix(kv.GetKey(), SubscriptionsPrefix)]))
	}
	return subs, kvs, rev, nil
}

func (s *Store) rangeAll(ctx context.Context, prefix string) ([]*hivemindv1.KeyValue, int64, error) {
	var out []*hivemindv1.KeyValue
	var rev int64
	after := ""
	for {
		resp, err := s.cp.Range(ctx, &hivemindv1.RangeRequest{Prefix: prefix, StartAfter: after})
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.GetHeader().GetRevision()
		}
		out = append(out, resp.GetKvs()...)
		if !resp.GetMore() || len(resp.GetKvs()) == 0 {
			return out, rev, nil
		}
		after = resp.GetKvs()[len(resp.GetKvs())-1].GetKey()
	}
}

// MoveInlineSecrets moves the secret of every record stored before the
// split to its own key: one transaction per subscription, guarded by the
// record's mod revision (a record changed meanwhile is left for the next
// pass) and by the secret key being absent (a separate secret already wins).
// It returns how many it moved. Old revisions in the event log still hold
// the inline secrets until they are compacted away.
func (s *Store) MoveInlineSecrets(ctx context.Context) (int, error) {
	kvs, _, err := s.rangeAll(ctx, SubscriptionsPrefix)
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, kv := range kvs {
		sub, err := Unmarshal(kv.GetValue())
		if err != nil || sub.GetSecret() == "" {
			continue
		}
		name := strings.TrimPrefix(kv.GetKey(), SubscriptionsPrefix)
		rec := proto.Clone(sub).(*hivemindv1.Subscription)
		rec.Secret = ""
		b, err := marshal.Marshal(rec)
		if err != nil {
			return moved, err
		}
		resp, err := s.cp.Txn(ctx, &hivemindv1.TxnRequest{
			Compares: []*hivemindv1.Compare{
				{Key: kv.GetKey(), Target: hivemindv1.Compare_TARGET_MOD_REVISION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: kv.GetModRevision()},
				{Key: SecretKey(name), Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: 0},
			},
			Success: []*hivemindv1.TxnOp{
				{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: SecretKey(name), Value: []byte(sub.GetSecret())}}},
				{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: kv.GetKey(), Value: b}}},
			},
		})
		if err != nil {
			return moved, fmt.Errorf("%s: %w", kv.GetKey(), err)
		}
		if resp.GetSucceeded() {
			moved++
		}
	}
	return moved, nil
}

// Delete removes a subscription, its secret and its delivery records in
// one transaction; ErrNotFound if there is none.
func (s *Store) Delete(ctx context.Context, name string) (int64, error) {
	key := Key(name)
	resp, err := s.cp.Txn(ctx, &hivemindv1.TxnRequest{
		Compares: []*hivemindv1.Compare{{Key: key, Target: hivemindv1.Compare_TARGET_VERSION, Result: hivemindv1.Compare_RESULT_GREATER, Number: 0}},
		Success: []*hivemindv1.TxnOp{
			{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: key}}},
			{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: SecretKey(name)}}},
			{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: DeliveriesPrefix + name + "/", Prefix: true}}},
		},
	})
	if err != nil {
		return 0, err
	}
	if !resp.GetSucceeded() {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return resp.GetHeader().GetRevision(), nil
}

// Disable marks a subscription disabled with a reason, unless it changed
// or went away since it was read (then whoever changed it decided).
func (s *Store) Disable(ctx context.Context, name, reason string) error {
	sub, kv, err := s.record(ctx, name) // rewritten as stored: no secret added
	if err != nil {
		return err
	}
	if sub.GetDisabled() {
		return nil
	}
	sub.Disabled, sub.DisabledReason = true, reason
	b, err := marshal.Marshal(sub)
	if err != nil {
		return err
	}
	_, err = s.cp.Txn(ctx, &hivemindv1.TxnRequest{
		Compares: []*hivemindv1.Compare{{Key: kv.GetKey(), Target: hivemindv1.Compare_TARGET_MOD_REVISION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: kv.GetModRevision()}},
		Success:  []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: kv.GetKey(), Value: b}}}},
	})
	return err
}

// PutDelivery records a delivery; a later record of the same id replaces
// it.
func (s *Store) PutDelivery(ctx context.Context, d *hivemindv1.Delivery) error {
	b, err := marshal.Marshal(d)
	if err != nil {
		return err
	}
	_, err = s.cp.Put(ctx, &hivemindv1.PutRequest{Key: DeliveryKey(d.GetSubscription(), d.GetId()), Value: b})
	return err
}

// GetDelivery returns a delivery record, or nil when there is none.
func (s *Store) GetDelivery(ctx context.Context, sub, id string) (*hivemindv1.Delivery, error) {
	resp, err := s.cp.Get(ctx, &hivemindv1.GetRequest{Key: DeliveryKey(sub, id)})
	if err != nil || !resp.GetFound() {
		return nil, err
	}
	d := &hivemindv1.Delivery{}
	if err := proto.Unmarshal(resp.GetKv().GetValue(), d); err != nil {
		return nil, fmt.Errorf("decode delivery: %w", err)
	}
	return d, nil
}

// ListDeliveries returns up to limit deliveries of sub, newest event
// first.
func (s *Store) ListDeliveries(ctx context.Context, sub string, limit int) ([]*hivemindv1.Delivery, error) {
	kvs, _, err := s.rangeAll(ctx, DeliveriesPrefix+sub+"/")
	if err != nil {
		return nil, err
	}
	out := make([]*hivemindv1.Delivery, 0, len(kvs))
	for _, kv := range kvs {
		d := &hivemindv1.Delivery{}
		if err := proto.Unmarshal(kv.GetValue(), d); err != nil {
			return nil, fmt.Errorf("%s: %w", kv.GetKey(), err)
		}
		out = append(out, d)
	}
	slices.SortStableFunc(out, func(a, b *hivemindv1.Delivery) int {
		if a.GetEventRevision() != b.GetEventRevision() {
			return cmp.Compare(b.GetEventRevision(), a.GetEventRevision())
		}
		return strings.Compare(a.GetId(), b.GetId())
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
