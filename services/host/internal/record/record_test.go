package record

import (
	"net/netip"
	"testing"
	"time"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/hostpublish"
	"github.com/hivemind/hivemind/services/host/internal/check"
	"github.com/hivemind/hivemind/services/host/internal/hostconfig"
)

func TestBuild(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := Builder{Node: "h1", Now: func() time.Time { return now }}
	cfg := &hostconfig.Config{
		Node: "h1", Tags: []string{"a"}, Meta: map[string]string{"k": "v"},
		Services: []hostconfig.Service{
			{Name: "web", ID: "web", Port: 80, Weight: 1},
			{Name: "db", ID: "db", Port: 5432, Weight: 2},
		},
	}
	health := []check.ServiceHealth{{ServiceID: "web", Status: check.Warning, Checks: []check.CheckState{
		{ID: "tcp-0", Name: "tcp-0", Kind: check.KindTCP, Status: check.Warning, Output: "slow"},
	}}}
	r := b.Build(cfg, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, health)
	if r.Node != "h1" || r.Addresses[0] != "10.0.0.1" || r.Tags[0] != "a" || r.Meta["k"] != "v" {
		t.Fatalf("record %v", r)
	}
	web, db := r.Services[0], r.Services[1]
	if web.Status != hivemindv1.HealthStatus_HEALTH_STATUS_WARNING || web.Checks[0].Output != "slow" || !web.Checks[0].UpdatedAt.AsTime().Equal(now) {
		t.Errorf("web %v", web)
	}
	if db.Status != hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL || db.Weight != 2 {
		t.Errorf("db without health %v, want critical", db)
	}

	// updated_at moves only when the check's state changes.
	later := now.Add(time.Minute)
	b.Now = func() time.Time { return later }
	r2 := b.Build(cfg, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, health)
	if !r2.Services[0].Checks[0].UpdatedAt.AsTime().Equal(now) || !hostpublish.SameContent(r, r2) {
		t.Errorf("an unchanged check moved: %v", r2.Services[0].Checks[0])
	}
	health[0].Checks[0].Status, health[0].Status = check.Passing, check.Passing
	r3 := b.Build(cfg, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, health)
	if !r3.Services[0].Checks[0].UpdatedAt.AsTime().Equal(later) || hostpublish.SameContent(r, r3) {
		t.Errorf("a changed check kept its time: %v", r3.Services[0].Checks[0])
	}
	r3.Seq, r3.Hlc = 9, 9
	if r4 := b.Build(cfg, []netip.Addr{netip.MustParseAddr("10.0.0.1")}, health); !hostpublish.SameContent(r3, r4) {
		t.Error("SameContent looks at seq and hlc")
	}
}
