// Package announce registers service instances for programs that are not
// host agents (Nesoi-style): /srv/<service>/<instance> holds a marshalled
// Announcement with the announcing node, a TTL and the time it was last
// renewed. An instance is live until updated_at + ttl; readers hide
// expired ones by time, and the announcing agent deletes those it
// announced once they expire (only if nobody renewed them since, through
// this agent or another).
package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

// Limits of an announcement's TTL.
const (
	MinTTL = time.Second
	MaxTTL = time.Hour
)

// Prefix is where announced services live in the tree.
const Prefix = "/srv/"

// Key is the tree path of an instance.
func Key(service, instance string) string { return Prefix + service + "/" + instance }

// ServicePrefix is the tree prefix of a service's instances.
func ServicePrefix(service string) string { return Prefix + service + "/" }

// Store is the part of the control-plane client announcements use.
type Store interface {
	Put(ctx context.Context, req *hivemindv1.PutRequest) (*hivemindv1.PutResponse, error)
	Delete(ctx context.Context, req *hivemindv1.DeleteRequest) (*hivemindv1.DeleteResponse, error)
	Range(ctx context.Context, req *hivemindv1.RangeRequest) (*hivemindv1.RangeResponse, error)
	Txn(ctx context.Context, req *hivemindv1.TxnRequest) (*hivemindv1.TxnResponse, error)
	Watch(ctx context.Context, req *hivemindv1.WatchRequest, fn func(*hivemindv1.WatchResponse) error) error
}

// Errors. Validation errors are joined *hostconfig.FieldError values.
var (
	ErrNotJoined = errors.New("announce: this node has not joined the cluster yet")
	ErrNotFound  = errors.New("announce: no such instance")
)

// Registry announces instances through this node's agent.
type Registry struct {
	node  string
	store func() Store
	now   func() time.Time
	log   *slog.Logger

	mu   sync.Mutex
	mine map[string]owned // key → what this agent wrote
	wake chan struct{}
}

type owned struct {
	modRev  int64
	expires time.Time
}

// New returns a registry for node. store is nil until the node joined; now
// nil means time.Now.
func New(node string, store func() Store, now func() time.Time, log *slog.Logger) *Registry {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &Registry{node: node, store: store, now: now, log: log, mine: map[string]owned{}, wake: make(chan struct{}, 1)}
}

func (r *Registry) st() (Store, error) {
	if s := r.store(); s != nil {
		return s, nil
	}
	return nil, ErrNotJoined
}

// Live reports whether a is live at now.
func Live(a *hivemindv1.Announcement, now time.Time) bool {
	return a.GetUpdatedAt().AsTime().Add(a.GetTtl().AsDuration()).After(now)
}

// Validate checks an announcement; errors name the field under prefix
// ("announcement.ttl").
func Validate(a *hivemindv1.Announcement) error {
	var f hostconfig.Fields
	if a == nil {
		f.Add("announcement", "required")
		return f.Err()
	}
	f.Label("announcement.service", a.GetService())
	f.Label("announcement.instance", a.GetInstance())
	if a.GetAddress() != "" {
		f.HostPort("announcement.address", a.GetAddress())
	}
	f.Meta("announcement.meta", a.GetMeta())
	switch {
	case a.GetTtl() == nil:
		f.Add("announcement.ttl", "required, %s to %s", MinTTL, MaxTTL)
	case a.GetTtl().CheckValid() != nil:
		f.Add("announcement.ttl", "%v", a.GetTtl().CheckValid())
	case a.GetTtl().AsDuration() < MinTTL || a.GetTtl().AsDuration() > MaxTTL:
		f.Add("announcement.ttl", "must be %s to %s, got %s", MinTTL, MaxTTL, a.GetTtl().AsDuration())
	}
	return f.Err()
}

// ValidateName checks a service and, unless instance is nil, an instance
// name given on their own (Withdraw, Discover).
func ValidateName(service string, instance *string) error {
	var f hostconfig.Fields
	f.Label("service", service)
	if instance != nil {
		f.Label("instance", *instance)
	}
	return f.Err()
}

// Announce registers or renews an instance, stamped with this node and the
// current time, and returns what it wrote and the revision.
func (r *Registry) Announce(ctx context.Context, a *hivemindv1.Announcement) (*hivemindv1.Announcement, int64, error) {
	if err := Validate(a); err != nil {
		return nil, 0, err
	}
	st, err := r.st()
	if err != nil {
		return nil, 0, err
	}
	a = proto.CloneOf(a)
	now := r.now()
	a.Node, a.UpdatedAt = r.node, timestamppb.New(now)
	value, err := proto.MarshalOptions{Deterministic: true}.Marshal(a)
	if err != nil {
		return nil, 0, err
	}
	key := Key(a.GetService(), a.GetInstance())
	resp, err := st.Put(ctx, &hivemindv1.PutRequest{Key: key, Value: value})
	if err != nil {
		return nil, 0, err
	}
	r.mu.Lock()
	r.mine[key] = owned{modRev: resp.GetKv().GetModRevision(), expires: now.Add(a.GetTtl().AsDuration())}
	r.mu.Unlock()
	r.poke()
	return a, resp.GetHeader().GetRevision(), nil
}

// Withdraw deletes an instance; ErrNotFound when there is none.
func (r *Registry) Withdraw(ctx context.Context, service, instance string) (int64, error) {
	if err := ValidateName(service, &instance); err != nil {
		return 0, err
	}
	st, err := r.st()
	if err != nil {
		return 0, err
	}
	key := Key(service, instance)
	resp, err := st.Delete(ctx, &hivemindv1.DeleteRequest{Key: key})
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	delete(r.mine, key)
	r.mu.Unlock()
	if resp.GetDeleted() == 0 {
		return resp.GetHeader().GetRevision(), fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return resp.GetHeader().GetRevision(), nil
}

// Discover lists the live instances of a service, by instance name, and
// the revision they reflect.
func (r *Registry) Discover(ctx context.Context, service string) ([]*hivemindv1.Announcement, int64, error) {
	if err := ValidateName(service, nil); err != nil {
		return nil, 0, err
	}
	st, err := r.st()
	if err != nil {
		return nil, 0, err
	}
	all, rev, err := r.list(ctx, st, service)
	if err != nil {
		return nil, 0, err
	}
	return liveSorted(all, r.now()), rev, nil
}

// list reads every instance of a service (live or not), by key, and the
// revision of the first page.
func (r *Registry) list(ctx context.Context, st Store, service string) (map[string]*hivemindv1.Announcement, int64, error) {
	out := map[string]*hivemindv1.Announcement{}
	var rev int64
	after := ""
	for {
		resp, err := st.Range(ctx, &hivemindv1.RangeRequest{Prefix: ServicePrefix(service), StartAfter: after})
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.GetHeader().GetRevision()
		}
		for _, kv := range resp.GetKvs() {
			if a := r.decode(kv); a != nil {
				out[kv.GetKey()] = a
			}
			after = kv.GetKey()
		}
		if !resp.GetMore() || len(resp.GetKvs()) == 0 {
			return out, rev, nil
		}
	}
}

func (r *Registry) decode(kv *hivemindv1.KeyValue) *hivemindv1.Announcement {
	a := &hivemindv1.Announcement{}
	if err := proto.Unmarshal(kv.GetValue(), a); err != nil {
		r.log.Warn("not an announcement; ignored", "key", kv.GetKey(), "err", err)
		return nil
	}
	return a
}

func liveSorted(all map[string]*hivemindv1.Announcement, now time.Time) []*hivemindv1.Announcement {
	out := make([]*hivemindv1.Announcement, 0, len(all))
	for _, a := range all {
		if Live(a, now) {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b *hivemindv1.Announcement) int { return strings.Compare(a.GetInstance(), b.GetInstance()) })
	return out
}

func (r *Registry) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run deletes the instances this agent announced once they expire, until
// ctx ends. A delete is conditional on the key's revision still being the
// one this agent wrote, so a renewal through another agent is kept.
func (r *Registry) Run(ctx context.Context) {
	for {
		r.mu.Lock()
		var next time.Time
		for _, o := range r.mine {
			if next.IsZero() || o.expires.Before(next) {
				next = o.expires
			}
		}
		r.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(r.now()), 0)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.wake:
			t.Stop()
			continue
		case <-t.C:
		}
		if err := r.reap(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("expired announcements not deleted yet", "err", err)
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

func (r *Registry) reap(ctx context.Context) error {
	st, err := r.st()
	if err != nil {
		return err
	}
	now := r.now()
	r.mu.Lock()
	due := map[string]owned{}
	for k, o := range r.mine {
		if !o.expires.After(now) {
			due[k] = o
		}
	}
	r.mu.Unlock()
	for key, o := range due {
		_, err := st.Txn(ctx, &hivemindv1.TxnRequest{
			Compares: []*hivemindv1.Compare{{Key: key, Target: hivemindv1.Compare_TARGET_MOD_REVISION, Result: hivemindv1.Compare_RESULT_EQUAL, Number: o.modRev}},
			Success:  []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Delete{Delete: &hivemindv1.TxnDelete{Key: key}}}},
		})
		if err != nil {
			return err
		}
		r.mu.Lock()
		if cur, ok := r.mine[key]; ok && cur == o {
			delete(r.mine, key)
		}
		r.mu.Unlock()
		r.log.Debug("expired announcement deleted", "key", key)
	}
	return nil
}
