package ping

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/gossip"
)

// TestNineMembers runs the fan-outs and the link records over nine members
// on loopback, one of which (n8) is alive in gossip but whose gRPC port
// never answers.
func TestNineMembers(t *testing.T) {
	const n = 9
	nodes := startCluster(t, n, func(i int) nodeOptions { return nodeOptions{blackhole: i == n-1} })
	t.Run("PingRequestReportsEveryMemberAndTheSilentOneTimedOut", func(t *testing.T) { testFanOut(t, nodes) })
	t.Run("PingRequestBadInput", func(t *testing.T) { testBadInput(t, nodes) })
	t.Run("Probes", func(t *testing.T) { testProbes(t, nodes) })
	t.Run("LinkCutAndRestored", func(t *testing.T) { testLinkCut(t, nodes) })
}

func recvAll[R any](t *testing.T, recv func() (R, error)) ([]R, []time.Duration) {
	t.Helper()
	start := time.Now()
	var out []R
	var at []time.Duration
	for {
		r, err := recv()
		if errors.Is(err, io.EOF) {
			return out, at
		}
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		out = append(out, r)
		at = append(at, time.Since(start))
	}
}

func testFanOut(t *testing.T, nodes []*testNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const timeout = 2 * time.Second
	st, err := dial(t, nodes[0]).PingRequest(ctx, &hivemindv1.PingRequestRequest{Target: "n1", Count: 5, Timeout: durationpb.New(timeout)})
	if err != nil {
		t.Fatal(err)
	}
	results, at := recvAll(t, st.Recv)
	got := map[string]*hivemindv1.PingRequestResponse{}
	for i, r := range results {
		t.Logf("%5v %s: sent %d received %d loss %.2f min %v avg %v max %v swim %v timed_out %v %s", at[i].Round(time.Millisecond),
			r.GetNode(), r.GetSent(), r.GetReceived(), r.GetLoss(), r.GetRttMin().AsDuration(), r.GetRttAvg().AsDuration(),
			r.GetRttMax().AsDuration(), r.GetSwimRtt().AsDuration(), r.GetTimedOut(), r.GetError())
		if got[r.GetNode()] != nil {
			t.Errorf("%s reported twice", r.GetNode())
		}
		got[r.GetNode()] = r
	}
	if want := []string{"n0", "n2", "n3", "n4", "n5", "n6", "n7", "n8"}; strings.Join(sortedKeys(got), ",") != strings.Join(want, ",") {
		t.Fatalf("reports from %v, want %v (all but the target)", sortedKeys(got), want)
	}
	for name, r := range got {
		if name == "n8" {
			if !r.GetTimedOut() || r.GetReceived() != 0 {
				t.Errorf("n8: %v, want timed out", r)
			}
			continue
		}
		if r.GetTimedOut() || r.GetError() != "" || r.GetSent() != 5 || r.GetReceived() != 5 || r.GetLoss() != 0 || r.GetTarget() != "n1" {
			t.Errorf("%s: %v, want 5 of 5 answered", name, r)
		}
		lo, avg, hi := r.GetRttMin().AsDuration(), r.GetRttAvg().AsDuration(), r.GetRttMax().AsDuration()
		if lo <= 0 || lo > avg || avg > hi {
			t.Errorf("%s: min %v avg %v max %v out of order", name, lo, avg, hi)
		}
	}
	// Answers stream as they come: the silent member is last, once the
	// timeout has passed, and the others well before.
	if last := results[len(results)-1]; last.GetNode() != "n8" || at[len(at)-1] < timeout {
		t.Errorf("last report %s at %v, want n8 after %v", last.GetNode(), at[len(at)-1], timeout)
	}
	if at[len(at)-2] >= timeout {
		t.Errorf("the answering members reported only at %v, not before the timeout", at[len(at)-2])
	}

	// A selector of two nodes: two reports.
	st, err = dial(t, nodes[3]).PingRequest(ctx, &hivemindv1.PingRequestRequest{Target: "n0", Count: 2, Selector: &hivemindv1.Selector{Nodes: []string{"n1", "n2"}}})
	if err != nil {
		t.Fatal(err)
	}
	results, _ = recvAll(t, st.Recv)
	if len(results) != 2 || results[0].GetReceived() != 2 || results[1].GetReceived() != 2 {
		t.Errorf("selector n1,n2: %v", results)
	}
}

func testBadInput(t *testing.T, nodes []*testNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, nodes[0])
	for _, tc := range []struct {
		req   *hivemindv1.PingRequestRequest
		code  codes.Code
		field string
	}{
		{&hivemindv1.PingRequestRequest{Target: "n1", Count: 101}, codes.InvalidArgument, "count:"},
		{&hivemindv1.PingRequestRequest{Target: "n1", Timeout: durationpb.New(31 * time.Second)}, codes.InvalidArgument, "timeout:"},
		{&hivemindv1.PingRequestRequest{Target: "n1", Timeout: durationpb.New(-time.Second)}, codes.InvalidArgument, "timeout:"},
		{&hivemindv1.PingRequestRequest{}, codes.InvalidArgument, "target:"},
		{&hivemindv1.PingRequestRequest{Target: "nobody"}, codes.NotFound, "target:"},
		{&hivemindv1.PingRequestRequest{Target: "n1", Selector: &hivemindv1.Selector{Nodes: []string{"nobody"}}}, codes.NotFound, "selector.nodes:"},
		{&hivemindv1.PingRequestRequest{Target: "n1", Selector: &hivemindv1.Selector{Roles: []string{"dns"}}}, codes.NotFound, "selector:"},
	} {
		st, err := c.PingRequest(ctx, tc.req)
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.field) {
			t.Errorf("%v: %v, want %v naming %q", tc.req, err, tc.code, tc.field)
		}
	}
}

func testProbes(t *testing.T, nodes []*testNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := dial(t, nodes[1])
	for _, name := range []string{"version", "load", "disk", "time"} {
		r, err := c.Probe(ctx, &hivemindv1.NodeProbeRequest{Name: name})
		if err != nil || r.GetNodeName() != "n1" || len(r.GetData().GetFields()) == 0 {
			t.Errorf("probe %s: %v, %v", name, r, err)
		}
	}
	if _, err := c.Probe(ctx, &hivemindv1.NodeProbeRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown probe: %v", err)
	}
	args := map[string]string{"word": "hello"}
	if _, err := c.Probe(ctx, &hivemindv1.NodeProbeRequest{Name: "echo", Args: args}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("exec probe without admin: %v, want PERMISSION_DENIED", err)
	}
	admin := metadata.AppendToOutgoingContext(ctx, "x-test-admin", "1")
	r, err := c.Probe(admin, &hivemindv1.NodeProbeRequest{Name: "echo", Args: args})
	if err != nil || r.GetData().GetFields()["output"].GetStructValue().GetFields()["said"].GetStringValue() != "hello" {
		t.Errorf("exec probe as admin: %v, %v", r, err)
	}
	if _, err := c.Probe(admin, &hivemindv1.NodeProbeRequest{Name: "echo", Args: map[string]string{"Bad-Name": "x"}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("exec probe with a bad argument name: %v", err)
	}

	st, err := dial(t, nodes[0]).ProbeRequest(ctx, &hivemindv1.ProbeRequestRequest{Target: "n1", Probe: "time", Selector: &hivemindv1.Selector{Nodes: []string{"n0", "n2", "n3"}}})
	if err != nil {
		t.Fatal(err)
	}
	results, _ := recvAll(t, st.Recv)
	if len(results) != 3 {
		t.Fatalf("time probe reports: %v", results)
	}
	for _, r := range results {
		f := r.GetResponse().GetData().GetFields()
		off := time.Duration(f["offset_seconds"].GetNumberValue() * float64(time.Second))
		if r.GetError() != "" || f["offset"] == nil || off.Abs() > r.GetRtt().AsDuration()+5*time.Millisecond {
			t.Errorf("%s: time probe %v: the offset of one clock from itself should be within the RTT", r.GetNode(), r)
		}
	}
	st, err = dial(t, nodes[0]).ProbeRequest(admin, &hivemindv1.ProbeRequestRequest{Target: "n1", Probe: "echo"})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("exec probe fanned out: %v, want PERMISSION_DENIED", err)
	}
}

func testLinkCut(t *testing.T, nodes []*testNode) {
	cfg := TestLinkConfig()
	n := len(nodes)
	watchers := nodes[:n-1]
	for _, w := range watchers {
		waitFor(t, 5*time.Second, w.name+" records all links up", func() bool {
			for _, p := range nodes {
				if l, _, ok := w.store.link(LinkKey(w.name, p.name)); p != w && (!ok || !l.Reachable) {
					return false
				}
			}
			return true
		})
	}

	cut := nodes[n-1]
	cut.stop()
	cutAt := time.Now()
	// Gossip declares it failed, then the link needs DownAfter observations.
	detect := gossip.TestConfig("x").FailureDetectionTime(n) + time.Duration(cfg.DownAfter+1)*cfg.Interval
	for _, w := range watchers {
		waitFor(t, detect+2*time.Second, w.name+" records the link to n8 down", func() bool {
			l, _, ok := w.store.link(LinkKey(w.name, cut.name))
			return ok && !l.Reachable
		})
	}
	t.Logf("link down recorded by all within %v (window %v)", time.Since(cutAt).Round(time.Millisecond), detect)

	back := startNode(t, cut.name, cut.dataDir, nodeOptions{})
	if _, err := back.agent.Join([]string{nodes[0].agent.LocalNode().Addr}); err != nil {
		t.Fatal(err)
	}
	backAt := time.Now()
	for _, w := range watchers {
		waitFor(t, 10*time.Second, w.name+" records the link to n8 up again", func() bool {
			l, _, ok := w.store.link(LinkKey(w.name, cut.name))
			return ok && l.Reachable
		})
	}
	t.Logf("link up recorded by all %v after the restart", time.Since(backAt).Round(time.Millisecond))
	for _, w := range watchers {
		if _, writes, _ := w.store.link(LinkKey(w.name, cut.name)); writes != 3 {
			t.Errorf("%s wrote its link to n8 %d times, want 3 (up, down, up)", w.name, writes)
		}
	}
}
