// Command hivemind-attack plays a compromised host: run inside a host's
// container (docker exec), it takes that host's credentials — the cluster
// secret and TLS files from the environment, its node key from the data
// directory — and tries each attack of the trust model against the
// cluster. Every attack must be refused with the code the trust model
// names; it prints one line per attack and exits 1 when any got through.
//
// It changes nothing when the cluster holds: every attack is refused. The
// e2e suite (test/e2e/60-compromised-host.sh) checks from outside that the
// cluster was unaffected.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"go.etcd.io/raft/v3/raftpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hivemind/hivemind/pkg/auth"
	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/secret"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
)

func main() {
	var (
		cps     = flag.String("controlplane", "controlplane-1:7000,controlplane-2:7000,controlplane-3:7000", "control-plane members to attack")
		dnsAddr = flag.String("dns", "dns-1:7000", "a dns processor to push forged records to")
		victim  = flag.String("victim", "host-1", "the host whose part of the cluster the attacks go after")
		watches = flag.Int("watches", 0, "open watches until refused, up to this many (0: skip)")
	)
	flag.Parse()
	if err := run(*cps, *dnsAddr, *victim, *watches); err != nil {
		fmt.Fprintln(os.Stderr, "hivemind-attack:", err)
		os.Exit(1)
	}
}

// env reads HIVEMIND_<name>, as the roles do.
func env(name string) string { return os.Getenv("HIVEMIND_" + name) }

type attacker struct {
	name   string
	sec    secret.Secret
	key    auth.NodeKey
	dial   grpcclient.Config
	failed int
}

func run(cps, dnsAddr, victim string, watches int) error {
	self := env("NODE_NAME")
	sec, err := secret.Load(env("CLUSTER_SECRET"), env("CLUSTER_SECRET_FILE"))
	if err != nil {
		return err
	}
	dataDir := env("DATA_DIR")
	if dataDir == "" {
		return errors.New("HIVEMIND_DATA_DIR is not set: run inside a host's container")
	}
	key, err := auth.LoadOrCreateNodeKey(dataDir)
	if err != nil {
		return err
	}
	creds, err := tlsconfig.Client(tlsconfig.Files{CA: env("TLS_CA"), Cert: env("TLS_CERT"), Key: env("TLS_KEY")})
	if err != nil {
		return err
	}
	a := &attacker{name: self, sec: sec, key: key, dial: grpcclient.Config{TLS: creds, MaxRetries: -1}}
	members := strings.Split(cps, ",")
	fmt.Printf("attacking as %s (its secret, key and certificate); victim %s\n", self, victim)

	// Identity: the secret alone does not make a process another node.
	a.expect("handshake under the victim's name", codes.PermissionDenied, func(ctx context.Context) error {
		conn := a.connAs(victim, members[0])
		defer conn.Close()
		_, err := hivemindv1.NewControlPlaneClient(conn).Status(ctx, &hivemindv1.StatusRequest{})
		return err
	})
	a.expect("join as the victim with incarnation 999 and a new address", codes.PermissionDenied, func(ctx context.Context) error {
		req := &hivemindv1.JoinRequest{Name: victim, Roles: &hivemindv1.Roles{Performs: []string{"host"}}, GrpcAddress: "10.66.66.66:7000", Incarnation: 999}
		a.key.SignJoin(req)
		_, err := hivemindv1.NewMembershipClient(a.conn(members[0])).Join(ctx, req)
		return err
	})
	a.expect("leave on the victim's behalf", codes.PermissionDenied, func(ctx context.Context) error {
		_, err := hivemindv1.NewMembershipClient(a.conn(members[0])).Leave(ctx, &hivemindv1.LeaveRequest{Name: victim})
		return err
	})

	// Control-plane internals.
	for _, m := range members {
		a.expect("Raft/Forward a put into the victim's part on "+m, codes.PermissionDenied, func(ctx context.Context) error {
			cmd := &raftv1.Command{Source: victim, Op: &raftv1.Command_Put{Put: &hivemindv1.PutRequest{Key: "/nodes/" + victim + "/host", Value: []byte("{}")}}}
			_, err := raftv1.NewRaftClient(a.conn(m)).Forward(ctx, &raftv1.ForwardRequest{Command: cmd})
			return err
		})
		a.expect("Raft/Forward a compaction on "+m, codes.PermissionDenied, func(ctx context.Context) error {
			cmd := &raftv1.Command{Op: &raftv1.Command_Compact{Compact: &hivemindv1.CompactRequest{Revision: 1}}}
			_, err := raftv1.NewRaftClient(a.conn(m)).Forward(ctx, &raftv1.ForwardRequest{Command: cmd})
			return err
		})
		a.expect("Raft/Send a heartbeat with a higher term from a made-up sender to "+m, codes.PermissionDenied, func(ctx context.Context) error {
			msg := &raftpb.Message{Type: raftpb.MsgHeartbeat.Enum(), From: proto.Uint64(12345), To: proto.Uint64(1), Term: proto.Uint64(math.MaxUint32)}
			b, err := proto.Marshal(msg)
			if err != nil {
				return err
			}
			st, err := raftv1.NewRaftClient(a.conn(m)).Send(ctx)
			if err != nil {
				return err
			}
			if err := st.Send(&raftv1.SendRequest{Messages: [][]byte{b}}); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			_, err = st.CloseAndRecv()
			return err
		})
	}

	// Writes into what the cluster itself says, or the victim's part.
	cp := hivemindv1.NewControlPlaneClient(a.conn(members[0]))
	a.expect("put into the victim's part", codes.PermissionDenied, func(ctx context.Context) error {
		_, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: "/nodes/" + victim + "/host", Value: []byte("{}")})
		return err
	})
	for _, ev := range []struct{ what, typ, uri string }{
		{"forged kv.delete of the victim's record", "kv.delete", "/nodes/" + victim + "/host"},
		{"forged kv.put of the victim's record", "kv.put", "/nodes/" + victim + "/host"},
		{"forged member.failed of the victim", "member.failed", "/members/" + victim},
		{"app.note under /notifier/subscriptions/", "app.note", "/notifier/subscriptions/evil"},
	} {
		a.expect("AppendEvent: "+ev.what, codes.PermissionDenied, func(ctx context.Context) error {
			_, err := cp.AppendEvent(ctx, &hivemindv1.AppendEventRequest{Type: ev.typ, Uri: ev.uri, Source: victim, Hook: hivemindv1.Hook_HOOK_DELETE})
			return err
		})
	}
	a.expect("a subscription written straight into /notifier/", codes.PermissionDenied, func(ctx context.Context) error {
		_, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: "/notifier/subscriptions/evil", Value: []byte("{}")})
		return err
	})
	a.expect("its own key with hlc 2^64-1", codes.InvalidArgument, func(ctx context.Context) error {
		_, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: "/nodes/" + a.name + "/attack", Value: []byte("x"), Hlc: math.MaxUint64})
		return err
	})
	a.expect("an 8 MiB put", codes.ResourceExhausted, func(ctx context.Context) error {
		_, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: "/nodes/" + a.name + "/big", Value: make([]byte, 8<<20)})
		// The server refuses it (grpc's "received message larger than max",
		// at --max-request-bytes plus the envelope), not this client.
		if err != nil && strings.Contains(err.Error(), "trying to send") {
			return fmt.Errorf("refused by this client, not by the server: %v", err)
		}
		return err
	})
	a.check("subscription secrets are not readable", func(ctx context.Context) error {
		resp, err := cp.Range(ctx, &hivemindv1.RangeRequest{Prefix: "/notifier/secrets/"})
		if err != nil {
			return nil // refused outright: fine
		}
		if n := len(resp.GetKvs()); n > 0 {
			return fmt.Errorf("read %d subscription secrets", n)
		}
		return nil
	})

	// The fast path: records for another host pushed to a dns processor.
	a.expect("PushHosts a record for the victim", codes.PermissionDenied, func(ctx context.Context) error {
		st, err := hivemindv1.NewDNSProcessorClient(a.conn(dnsAddr)).PushHosts(ctx)
		if err != nil {
			return err
		}
		rec := &hivemindv1.HostRecord{Node: victim, Addresses: []string{"10.66.66.66"}, Seq: math.MaxUint32}
		if err := st.Send(&hivemindv1.PushHostsRequest{Host: rec}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		_, err = st.CloseAndRecv()
		return err
	})

	if watches > 0 {
		a.expect(fmt.Sprintf("more than the per-caller cap of watches (up to %d)", watches), codes.ResourceExhausted, func(ctx context.Context) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			conn := a.conn(members[0])
			for i := 0; i < watches; i++ {
				st, err := hivemindv1.NewControlPlaneClient(conn).Watch(ctx, &hivemindv1.WatchRequest{Prefix: "/nodes/" + a.name + "/"})
				if err != nil {
					return err
				}
				// The first answer (created, or the refusal) comes at once.
				if _, err := st.Recv(); err != nil {
					return err
				}
			}
			return nil
		})
	}

	if a.failed > 0 {
		return fmt.Errorf("%d attacks were not refused as they should be", a.failed)
	}
	fmt.Println("every attack refused")
	return nil
}

// conn dials addr as this host.
func (a *attacker) conn(addr string) *grpc.ClientConn {
	return a.connAs(a.name, addr)
}

// connAs dials addr claiming the node name name, with this host's key.
func (a *attacker) connAs(name, addr string) *grpc.ClientConn {
	cfg := a.dial
	cfg.Auth = auth.NewNodeAuth(name, a.sec, a.key)
	conn, err := grpcclient.Dial(addr, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dial %s: %v\n", addr, err)
		os.Exit(1)
	}
	return conn
}

// expect runs an attack that must end with code.
func (a *attacker) expect(what string, code codes.Code, attack func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := attack(ctx)
	if got := status.Code(err); got != code {
		a.failed++
		fmt.Printf("FAIL  %s: %v (%v), want %v\n", what, got, err, code)
		return
	}
	fmt.Printf("ok    %s: %v: %s\n", what, code, status.Convert(err).Message())
}

// check runs an attack whose outcome it judges itself.
func (a *attacker) check(what string, attack func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := attack(ctx); err != nil {
		a.failed++
		fmt.Printf("FAIL  %s: %v\n", what, err)
		return
	}
	fmt.Printf("ok    %s\n", what)
}
