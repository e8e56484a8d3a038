package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/cpclient"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/services/controlplane/internal/cptest"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// direct is a client bound to one member, without retries elsewhere.
func direct(t *testing.T, c *cptest.Cluster, i int) hivemindv1.ControlPlaneClient {
	conn, err := grpcclient.Dial(c.Nodes[i].Addr, grpcclient.Config{MaxRetries: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return hivemindv1.NewControlPlaneClient(conn)
}

func put(t *testing.T, cl *cpclient.Client, key, val string) *hivemindv1.PutResponse {
	t.Helper()
	resp, err := cl.Put(ctx(t), &hivemindv1.PutRequest{Key: key, Value: []byte(val)})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return resp
}

func TestLeaderCrashWritesContinue(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	cl := c.Client(cpclient.Config{})
	for i := 0; i < 20; i++ {
		put(t, cl, fmt.Sprintf("/app/k%d", i), "v")
	}
	old := c.Leader()
	c.CrashNode(old)
	put(t, cl, "/app/after", "v")
	if now := c.Leader(); now == old {
		t.Fatal("crashed node still leads")
	}
	resp, err := cl.Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/app/"})
	if err != nil || len(resp.Kvs) != 21 {
		t.Fatalf("after the crash: %d keys, %v", len(resp.GetKvs()), err)
	}
}

func TestRestartEveryNodeKeepsAcknowledgedWrites(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	cl := c.Client(cpclient.Config{})
	for i := 0; i < 300; i++ { // past the snapshot interval
		put(t, cl, fmt.Sprintf("/app/k%03d", i), fmt.Sprint(i))
	}
	for i := range c.Nodes {
		c.CrashNode(i)
	}
	for i := range c.Nodes {
		c.StartNode(i)
	}
	c.Leader()
	for i := range c.Nodes {
		var resp *hivemindv1.RangeResponse
		c.WaitFor(fmt.Sprintf("node %d to serve linearizable reads", i), 10*time.Second, func() bool {
			var err error
			resp, err = direct(t, c, i).Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/app/", Limit: 1000})
			return err == nil
		})
		if len(resp.Kvs) != 300 || resp.Header.Revision != 300 {
			t.Fatalf("node %d after restart: %d keys at revision %d, want 300 at 300", i, len(resp.Kvs), resp.Header.Revision)
		}
	}
}

func TestPartitionMinorityDegradedMajorityServes(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{Faulty: true})
	cl := c.Client(cpclient.Config{})
	put(t, cl, "/app/x", "before")
	lead := c.Leader()
	var others []int
	for i := range c.Nodes {
		if i != lead {
			others = append(others, i)
		}
	}
	c.Partition([]int{lead}, others)
	minority := direct(t, c, lead)
	c.WaitFor("minority degraded", 5*time.Second, func() bool {
		st, err := minority.Status(ctx(t), &hivemindv1.StatusRequest{})
		return err == nil && st.Degraded
	})
	start := time.Now()
	_, err := minority.Put(ctx(t), &hivemindv1.PutRequest{Key: "/app/x", Value: []byte("minority")})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "no quorum") {
		t.Fatalf("minority write: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("minority write took %v to fail", took)
	}
	if _, err := minority.Get(ctx(t), &hivemindv1.GetRequest{Key: "/app/x"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("minority linearizable read: %v", err)
	}
	stale, err := minority.Get(ctx(t), &hivemindv1.GetRequest{Key: "/app/x", Stale: true})
	if err != nil || !stale.Header.Stale || string(stale.Kv.Value) != "before" {
		t.Fatalf("stale read: %v %v", stale, err)
	}
	// The majority elects and serves.
	majority := direct(t, c, others[0])
	c.WaitFor("majority write", 10*time.Second, func() bool {
		_, err := majority.Put(ctx(t), &hivemindv1.PutRequest{Key: "/app/x", Value: []byte("majority"), IdempotencyKey: "maj-1"})
		return err == nil
	})
	c.Heal()
	c.WaitFor("healed minority converges", 10*time.Second, func() bool {
		got, err := minority.Get(ctx(t), &hivemindv1.GetRequest{Key: "/app/x"})
		return err == nil && string(got.Kv.Value) == "majority"
	})
}

func TestBadInputNamesTheField(t *testing.T) {
	c := cptest.Start(t, 1, cptest.Options{FSM: fsm.Config{MaxRevisions: 5}})
	api := direct(t, c, 0)
	c.Leader()
	tests := []struct {
		name  string
		call  func() error
		code  codes.Code
		field string
	}{
		{"put key", func() error {
			_, err := api.Put(ctx(t), &hivemindv1.PutRequest{Key: "no-slash"})
			return err
		}, codes.InvalidArgument, "key"},
		{"txn op key", func() error {
			_, err := api.Txn(ctx(t), &hivemindv1.TxnRequest{Success: []*hivemindv1.TxnOp{{Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/ok"}}}, {Op: &hivemindv1.TxnOp_Put{Put: &hivemindv1.TxnPut{Key: "/a//b"}}}}})
			return err
		}, codes.InvalidArgument, "success[1].put.key"},
		{"event type", func() error {
			_, err := api.AppendEvent(ctx(t), &hivemindv1.AppendEventRequest{Type: "Nope!"})
			return err
		}, codes.InvalidArgument, "type"},
		{"range limit", func() error {
			_, err := api.Range(ctx(t), &hivemindv1.RangeRequest{Prefix: "/", Limit: 1 << 20})
			return err
		}, codes.InvalidArgument, "limit"},
		{"compact future", func() error {
			_, err := api.Compact(ctx(t), &hivemindv1.CompactRequest{Revision: 1000})
			return err
		}, codes.OutOfRange, "revision"},
		{"watch future", func() error {
			s, err := api.Watch(ctx(t), &hivemindv1.WatchRequest{StartRevision: 1000})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.OutOfRange, "start_revision"},
	}
	for _, tt := range tests {
		err := tt.call()
		st := status.Convert(err)
		if st.Code() != tt.code || !strings.Contains(st.Message(), tt.field) {
			t.Errorf("%s: got %v %q, want %v naming %q", tt.name, st.Code(), st.Message(), tt.code, tt.field)
		}
	}
	// Nothing was half applied.
	if got, _ := api.Get(ctx(t), &hivemindv1.GetRequest{Key: "/ok"}); got.GetFound() {
		t.Error("a rejected txn applied its first op")
	}
	// History past retention: a clear compacted error.
	for i := 0; i < 10; i++ {
		if _, err := api.Put(ctx(t), &hivemindv1.PutRequest{Key: "/k", Value: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := api.Watch(ctx(t), &hivemindv1.WatchRequest{StartRevision: 1})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.OutOfRange || !strings.Contains(status.Convert(err).Message(), "compacted; oldest retained is 6") {
		t.Fatalf("watch from compacted history: %v", err)
	}
}

func TestMemberAddPromoteRemove(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	cl := c.Client(cpclient.Config{})
	for i := 0; i < 10; i++ { // a short log: promotion must still wait for the learner
		put(t, cl, fmt.Sprintf("/app/k%d", i), "v")
	}
	i := c.NewMember("cp4")
	n := c.Nodes[i]
	// Any member accepts the call; a follower hands it to the leader.
	follower := (c.Leader() + 1) % 3
	resp, err := direct(t, c, follower).MemberAdd(ctx(t), &hivemindv1.MemberAddRequest{Name: n.Name, PeerAddress: n.Addr, GrpcAddress: n.Addr})
	if err != nil || !resp.Member.Learner {
		t.Fatalf("member add: %v %v", resp, err)
	}
	// Not running yet: it must stay a learner, or the cluster would count
	// a voter that cannot vote.
	time.Sleep(300 * time.Millisecond) // several promotion passes (every 5 ticks of 20ms)
	st, err := direct(t, c, 0).Status(ctx(t), &hivemindv1.StatusRequest{})
	if err != nil || len(st.Learners) != 1 || len(st.Voters) != 3 {
		t.Fatalf("before it runs, cp4 must be a learner: %v %v", st, err)
	}
	c.StartNode(i)
	c.WaitFor("cp4 promoted to voter", 15*time.Second, func() bool {
		st, err := direct(t, c, 0).MemberList(ctx(t), &hivemindv1.MemberListRequest{})
		if err != nil {
			return false
		}
		for _, m := range st.Members {
			if m.Name == "cp4" {
				return !m.Learner
			}
		}
		return false
	})
	got, err := direct(t, c, i).Get(ctx(t), &hivemindv1.GetRequest{Key: "/app/k0"})
	if err != nil || !got.Found {
		t.Fatalf("new member lacks old data: %v %v", got, err)
	}
	if _, err := direct(t, c, 0).MemberRemove(ctx(t), &hivemindv1.MemberRemoveRequest{Name: "cp4"}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor("cp4 gone from every member's view", 5*time.Second, func() bool {
		for i := 0; i < 3; i++ {
			st, err := direct(t, c, i).Status(ctx(t), &hivemindv1.StatusRequest{})
			if err != nil || len(st.Voters) != 3 || len(st.Learners) != 0 {
				return false
			}
		}
		return true
	})
}

func TestRetriedWriteAppliesOnce(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{})
	c.Leader()
	follower := direct(t, c, (c.Leader()+1)%3)
	req := &hivemindv1.AppendEventRequest{Type: "test.once", Uri: "/app/x", IdempotencyKey: "retry-1"}
	first, err := follower.AppendEvent(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	// The same request again, through another member, as a client retrying
	// after a lost answer would send it.
	again, err := direct(t, c, c.Leader()).AppendEvent(ctx(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if again.Event.Id != first.Event.Id || again.Header.Revision != first.Header.Revision {
		t.Fatalf("retry applied again: %v then %v", first.Event, again.Event)
	}
	st, _ := follower.Status(ctx(t), &hivemindv1.StatusRequest{})
	if st.AppliedRevision != first.Header.Revision {
		t.Fatalf("revision moved to %d after a retry of revision %d", st.AppliedRevision, first.Header.Revision)
	}
}

func TestWatchResumesOnALaggingMember(t *testing.T) {
	c := cptest.Start(t, 3, cptest.Options{Faulty: true})
	lead := c.Leader()
	lagging := (lead + 1) % 3
	var others []int
	for i := range c.Nodes {
		if i != lagging {
			others = append(others, i)
		}
	}
	// Cut one follower off, write, and heal: a client that saw the new
	// revisions elsewhere resumes its watch on the member that is behind.
	c.Partition([]int{lagging}, others)
	cl := c.Client(cpclient.Config{Endpoints: []string{c.Nodes[lead].Addr}})
	var last int64
	for i := 0; i < 5; i++ {
		last = put(t, cl, fmt.Sprintf("/app/k%d", i), "v").Header.Revision
	}
	c.Heal()
	s, err := direct(t, c, lagging).Watch(ctx(t), &hivemindv1.WatchRequest{StartRevision: last})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatalf("resuming on a lagging member: %v", err)
	}
	if len(resp.Events) == 0 || resp.Events[0].Revision != last {
		t.Fatalf("got %v, want revision %d", resp, last)
	}
}

// A member stopping ends the watches open on it with UNAVAILABLE, the
// code on which clients resume on another member, instead of holding the
// stop for its whole timeout and then ending them OK.
func TestWatchEndsUnavailableOnStop(t *testing.T) {
	c := cptest.Start(t, 1, cptest.Options{})
	rev := put(t, c.Client(cpclient.Config{}), "/app/w", "v").Header.Revision
	s, err := direct(t, c, 0).Watch(ctx(t), &hivemindv1.WatchRequest{StartRevision: rev, Prefix: "/app/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	end := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				end <- err
				return
			}
		}
	}()
	start := time.Now()
	c.StopNode(0)
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stop with a watch open took %v", took)
	}
	if err := <-end; status.Code(err) != codes.Unavailable {
		t.Fatalf("watch ended with %v, want UNAVAILABLE", err)
	}
}
