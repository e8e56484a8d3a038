package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hivemind/hivemind/pkg/clustertest"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

const goodConfig = `
tags: [t1]
services:
  - name: web
    port: 8080
    checks:
      - tcp: %s
        interval: 1s
  - name: batch
    port: 8081
    checks:
      - name: heartbeat
        ttl: 30s
publish:
  web/greeting: hello
`

// TestHostAgent runs a control plane and a host agent process and drives
// the agent through its Host API, checking what reaches the control plane.
func TestHostAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	c := clustertest.Start(t, clustertest.Options{ControlPlanes: 1})
	cfgPath := filepath.Join(t.TempDir(), "host.yaml")
	// The web check dials the control plane's gRPC port, which is up.
	writeConfig(t, cfgPath, strings.Replace(goodConfig, "%s", c.ControlPlaneAddrs()[0], 1))
	c.Add("h1", "host", "--config", cfgPath, "--address", "10.0.0.1")
	c.WaitHealthy("h1", 30*time.Second)
	host := hivemindv1.NewHostClient(c.Dial("h1"))
	cp := c.ControlPlane()

	stored := func(ctx context.Context) *hivemindv1.HostRecord {
		resp, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: "/nodes/h1/host"})
		if err != nil || !resp.GetFound() {
			return nil
		}
		r := &hivemindv1.HostRecord{}
		if err := proto.Unmarshal(resp.GetKv().GetValue(), r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	service := func(r *hivemindv1.HostRecord, id string) *hivemindv1.ServiceInstance {
		for _, s := range r.GetServices() {
			if s.GetId() == id {
				return s
			}
		}
		return nil
	}
	passing := hivemindv1.HealthStatus_HEALTH_STATUS_PASSING

	t.Run("record", func(t *testing.T) {
		c.WaitFor("web passing in the control plane", 20*time.Second, func(ctx context.Context) bool {
			r := stored(ctx)
			return r != nil && service(r, "web").GetStatus() == passing
		})
		got, err := host.GetHost(context.Background(), &hivemindv1.GetHostRequest{})
		if err != nil {
			t.Fatal(err)
		}
		r := got.GetHost()
		if r.GetNode() != "h1" || !slices.Equal(r.GetAddresses(), []string{"10.0.0.1"}) || !slices.Equal(r.GetTags(), []string{"t1"}) {
			t.Errorf("record %v", r)
		}
		if st := service(r, "batch").GetStatus(); st != hivemindv1.HealthStatus_HEALTH_STATUS_CRITICAL {
			t.Errorf("batch is %s before its TTL check was updated, want critical", st)
		}
		c.WaitFor("/app/web/greeting", 10*time.Second, func(ctx context.Context) bool {
			resp, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: "/app/web/greeting"})
			return err == nil && string(resp.GetKv().GetValue()) == "hello"
		})
	})

	t.Run("UpdateTTL", func(t *testing.T) {
		before, _ := host.GetHost(context.Background(), &hivemindv1.GetHostRequest{})
		resp, err := host.UpdateTTL(context.Background(), &hivemindv1.UpdateTTLRequest{ServiceId: "batch", Status: passing, Output: "ok"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetCheck().GetStatus() != passing || resp.GetCheck().GetName() != "heartbeat" || resp.GetCheck().GetOutput() != "ok" {
			t.Errorf("UpdateTTL answered %v", resp.GetCheck())
		}
		c.WaitFor("batch passing in the control plane with a newer seq", 10*time.Second, func(ctx context.Context) bool {
			r := stored(ctx)
			return r.GetSeq() > before.GetHost().GetSeq() && service(r, "batch").GetStatus() == passing
		})
		for _, tc := range []struct {
			req   *hivemindv1.UpdateTTLRequest
			code  codes.Code
			field string
		}{
			{&hivemindv1.UpdateTTLRequest{ServiceId: "nope", Status: passing}, codes.NotFound, "service_id"},
			{&hivemindv1.UpdateTTLRequest{Status: passing}, codes.InvalidArgument, "service_id"},
			{&hivemindv1.UpdateTTLRequest{ServiceId: "batch", Check: "nope", Status: passing}, codes.NotFound, "check"},
			{&hivemindv1.UpdateTTLRequest{ServiceId: "web", Status: passing}, codes.InvalidArgument, "check"},
			{&hivemindv1.UpdateTTLRequest{ServiceId: "web", Check: "tcp-0", Status: passing}, codes.InvalidArgument, "check"},
			{&hivemindv1.UpdateTTLRequest{ServiceId: "batch"}, codes.InvalidArgument, "status"},
		} {
			_, err := host.UpdateTTL(context.Background(), tc.req)
			if status.Code(err) != tc.code || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
				t.Errorf("UpdateTTL(%v): %v, want %s naming %s", tc.req, err, tc.code, tc.field)
			}
		}
	})

	t.Run("Reload", func(t *testing.T) {
		before, _ := host.GetHost(context.Background(), &hivemindv1.GetHostRequest{})
		writeConfig(t, cfgPath, "services:\n  - name: web\n    checks:\n      - tcp: 127.0.0.1:1\n        interval: 1ms\n")
		_, err := host.Reload(context.Background(), &hivemindv1.ReloadRequest{})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "services[0].checks[0].interval") {
			t.Fatalf("Reload of a bad file: %v, want INVALID_ARGUMENT naming services[0].checks[0].interval", err)
		}
		after, _ := host.GetHost(context.Background(), &hivemindv1.GetHostRequest{})
		if after.GetHost().GetSeq() != before.GetHost().GetSeq() {
			t.Errorf("a bad reload changed the record: seq %d → %d", before.GetHost().GetSeq(), after.GetHost().GetSeq())
		}
		writeConfig(t, cfgPath, strings.Replace(strings.Replace(goodConfig, "%s", c.ControlPlaneAddrs()[0], 1), "[t1]", "[t1, t2]", 1))
		resp, err := host.Reload(context.Background(), &hivemindv1.ReloadRequest{})
		if err != nil || len(resp.GetServices()) != 2 {
			t.Fatalf("Reload: %v %v", resp, err)
		}
		c.WaitFor("tag t2 in the control plane", 10*time.Second, func(ctx context.Context) bool {
			return slices.Contains(stored(ctx).GetTags(), "t2")
		})
	})

	t.Run("announce", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for _, tc := range []struct {
			a     *hivemindv1.Announcement
			field string
		}{
			{nil, "announcement"},
			{&hivemindv1.Announcement{Service: "Bad_Name", Instance: "i1", Ttl: durationpb.New(time.Minute)}, "announcement.service"},
			{&hivemindv1.Announcement{Service: "api", Instance: "i1"}, "announcement.ttl"},
			{&hivemindv1.Announcement{Service: "api", Instance: "i1", Ttl: durationpb.New(2 * time.Hour)}, "announcement.ttl"},
			{&hivemindv1.Announcement{Service: "api", Instance: "i1", Ttl: durationpb.New(time.Minute), Address: "nope"}, "announcement.address"},
		} {
			_, err := host.Announce(ctx, &hivemindv1.AnnounceRequest{Announcement: tc.a})
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
				t.Errorf("Announce(%v): %v, want INVALID_ARGUMENT naming %s", tc.a, err, tc.field)
			}
		}

		watch, err := host.WatchService(ctx, &hivemindv1.WatchServiceRequest{Service: "api"})
		if err != nil {
			t.Fatal(err)
		}
		next := func(want ...string) {
			t.Helper()
			for {
				m, err := watch.Recv()
				if err != nil {
					t.Fatalf("watch: %v (waiting for %v)", err, want)
				}
				var got []string
				for _, a := range m.GetInstances() {
					got = append(got, a.GetInstance())
				}
				if slices.Equal(got, want) {
					return
				}
			}
		}
		next()
		a, err := host.Announce(ctx, &hivemindv1.AnnounceRequest{Announcement: &hivemindv1.Announcement{
			Service: "api", Instance: "i1", Address: "10.0.0.1:80", Master: true, Ttl: durationpb.New(2 * time.Second),
		}})
		if err != nil {
			t.Fatal(err)
		}
		if a.GetAnnouncement().GetNode() != "h1" || a.GetAnnouncement().GetUpdatedAt() == nil || a.GetRevision() == 0 {
			t.Errorf("Announce answered %v", a)
		}
		next("i1")
		if _, err := host.Announce(ctx, &hivemindv1.AnnounceRequest{Announcement: &hivemindv1.Announcement{
			Service: "api", Instance: "i2", Ttl: durationpb.New(time.Hour),
		}}); err != nil {
			t.Fatal(err)
		}
		next("i1", "i2")
		d, err := host.Discover(ctx, &hivemindv1.DiscoverRequest{Service: "api"})
		if err != nil || len(d.GetInstances()) != 2 || !d.GetInstances()[0].GetMaster() {
			t.Errorf("Discover: %v %v", d, err)
		}
		if _, err := host.Withdraw(ctx, &hivemindv1.WithdrawRequest{Service: "api", Instance: "i2"}); err != nil {
			t.Fatal(err)
		}
		next("i1")
		// i1 is not renewed: it expires after 2s, and the agent deletes it.
		next()
		c.WaitFor("expired i1 deleted", 10*time.Second, func(ctx context.Context) bool {
			resp, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: "/srv/api/i1"})
			return err == nil && !resp.GetFound()
		})
		if _, err := host.Withdraw(ctx, &hivemindv1.WithdrawRequest{Service: "api", Instance: "i2"}); status.Code(err) != codes.NotFound {
			t.Errorf("Withdraw of a withdrawn instance: %v, want NOT_FOUND", err)
		}
		cancel()
		if _, err := watch.Recv(); err != nil && err != io.EOF && status.Code(err) != codes.Canceled {
			t.Errorf("watch ended with %v", err)
		}
	})

	t.Run("fast path without the control plane", func(t *testing.T) {
		c.Add("d1", "dns", "--dns-addr", "127.0.0.1:0")
		c.WaitHealthy("d1", 30*time.Second)
		dns := hivemindv1.NewDNSProcessorClient(c.Dial("d1"))
		seqAtDNS := func(ctx context.Context) uint64 {
			resp, err := dns.Lookup(ctx, &hivemindv1.LookupRequest{Name: "batch.service.hive.", Type: "A"})
			if err != nil {
				return 0
			}
			return resp.GetHostSeqs()["h1"]
		}
		c.Kill("cp1") // the only control-plane node: no quorum, no writes
		resp, err := host.UpdateTTL(context.Background(), &hivemindv1.UpdateTTLRequest{ServiceId: "batch", Status: hivemindv1.HealthStatus_HEALTH_STATUS_WARNING})
		if err != nil || resp.GetCheck().GetStatus() != hivemindv1.HealthStatus_HEALTH_STATUS_WARNING {
			t.Fatal(resp, err)
		}
		now, err := host.GetHost(context.Background(), &hivemindv1.GetHostRequest{})
		if err != nil {
			t.Fatal(err)
		}
		want := now.GetHost().GetSeq()
		c.WaitFor("the dns processor has the new record through PushHosts", 15*time.Second, func(ctx context.Context) bool {
			return seqAtDNS(ctx) >= want
		})
		c.Restart("cp1")
		c.WaitFor("the control plane has the record again (re-asserted)", 30*time.Second, func(ctx context.Context) bool {
			r := stored(ctx)
			return r.GetSeq() >= want && service(r, "batch").GetStatus() == hivemindv1.HealthStatus_HEALTH_STATUS_WARNING
		})
	})

	t.Run("gone on stop", func(t *testing.T) {
		c.Stop("h1")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if r := stored(ctx); !r.GetGone() {
			t.Errorf("after a graceful stop the control plane has %v, want gone", r)
		}
	})
}

func writeConfig(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
