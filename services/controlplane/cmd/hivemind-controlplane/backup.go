package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/hivemind/hivemind/pkg/auth"
	"github.com/hivemind/hivemind/pkg/config"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/grpcclient"
	"github.com/hivemind/hivemind/pkg/tlsconfig"
	"github.com/hivemind/hivemind/services/controlplane/internal/backup"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
)

// The offline subcommands: snapshot save and status, restore, recover.
// Each parses its own flags (also from HIVEMIND_* variables) and returns
// the process's exit status.

const subcommandsHelp = `
Backup and recovery subcommands (each with its own --help; see docs/operations.md):
  snapshot save   stream a snapshot of the cluster's state from a member into a file
  snapshot status check a snapshot file and print its header
  restore         prepare a new member's data directory from a snapshot file
  recover         make a one-member cluster of a surviving member's data (lost quorum)`

// subcommand runs args[0] when it names an offline subcommand.
func subcommand(ctx context.Context, args []string, stdout, stderr io.Writer) (int, bool) {
	if len(args) == 0 {
		return 0, false
	}
	var run func(context.Context, []string, io.Writer, io.Writer) error
	name := args[0]
	rest := args[1:]
	switch args[0] {
	case "snapshot":
		if len(args) < 2 || (args[1] != "save" && args[1] != "status") {
			fmt.Fprintln(stderr, "snapshot: want 'snapshot save FILE' or 'snapshot status FILE'")
			return 2, true
		}
		name, rest = "snapshot "+args[1], args[2:]
		run = snapshotSave
		if args[1] == "status" {
			run = snapshotStatus
		}
	case "restore":
		run = restore
	case "recover":
		run = recoverCmd
	default:
		return 0, false
	}
	if err := run(ctx, rest, stdout, stderr); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return 0, true
		}
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		if errors.Is(err, errUsage) {
			return 2, true
		}
		return 1, true
	}
	return 0, true
}

var errUsage = errors.New("usage")

func usage(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func parse(fs *flag.FlagSet, command, synopsis string, args []string, stderr io.Writer) error {
	fs.SetOutput(stderr)
	config.SetUsage(fs, "hivemind-controlplane "+command, synopsis)
	if err := config.Parse(fs, args, nil); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return err
		}
		return usage("%v", err)
	}
	return nil
}

func snapshotSave(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("snapshot save", flag.ContinueOnError)
	endpoint := fs.String("endpoint", "127.0.0.1:7000", "gRPC address of any control-plane member")
	token := fs.String("token", "", "operator API token with the admin scope")
	ca := fs.String("tls-ca", "", "PEM CA that signs the member's certificate; when set, the call uses TLS")
	stale := fs.Bool("stale", false, "take the member's own state without confirming with the leader (works without a quorum)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long the whole transfer may take")
	if err := parse(fs, "snapshot save FILE", "Streams a consistent snapshot of the whole state from a member into FILE (written atomically; checked against its SHA-256 trailer).", args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usage("want exactly one FILE argument, got %d", fs.NArg())
	}
	if *token == "" {
		return usage("--token: empty; the Snapshot call needs an operator token with the admin scope")
	}
	creds, err := tlsconfig.Client(tlsconfig.Files{CA: *ca})
	if err != nil {
		return err
	}
	conn, err := grpcclient.Dial(*endpoint, grpcclient.Config{MaxRetries: -1, TLS: creds, Auth: auth.BearerToken(*token)})
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := hivemindv1.NewControlPlaneClient(conn).Snapshot(ctx, &hivemindv1.SnapshotRequest{Stale: *stale})
	if err != nil {
		return err
	}
	hdr, err := backup.Save(ctx, st, fs.Arg(0))
	if err != nil {
		return err
	}
	printHeader(stdout, fs.Arg(0), hdr)
	return nil
}

func snapshotStatus(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("snapshot status", flag.ContinueOnError)
	if err := parse(fs, "snapshot status FILE", "Checks a snapshot file whole (format version, lengths, SHA-256) and prints its header.", args, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usage("want exactly one FILE argument, got %d", fs.NArg())
	}
	hdr, snap, err := backup.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	printHeader(stdout, fs.Arg(0), hdr)
	fmt.Fprintf(stdout, "keys: %d  events: %d (revisions %d..%d)  intents: %d\n",
		len(snap.GetKvs()), len(snap.GetEvents()), max(snap.GetOldestRevision(), 1), snap.GetRevision(), len(snap.GetIntents()))
	return nil
}

func printHeader(w io.Writer, path string, h *hivemindv1.SnapshotHeader) {
	fmt.Fprintf(w, "%s: format %d, revision %d, epoch %d, cluster %x, member %s, taken %s, %d state bytes\n",
		path, h.GetFormatVersion(), h.GetRevision(), h.GetEpoch(), h.GetClusterId(), h.GetMember(),
		h.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), h.GetStateBytes())
}

func restore(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	file := fs.String("snapshot", "", "the snapshot file to restore")
	dataDir := fs.String("data-dir", "data/controlplane", "the new member's --data-dir (its raft/ must not exist or be empty)")
	name := fs.String("node-name", "", "the new member's --node-name")
	cluster := fs.String("initial-cluster", "", "the new cluster's members as name=host:port,…, the same for every member")
	if err := parse(fs, "restore", "Prepares the data directory of one member of a new cluster from a snapshot file, as etcdutl snapshot restore does: run it for each member with the same file and --initial-cluster, then start the members with that --initial-cluster. The new cluster has a new cluster id and the next epoch. A damaged, truncated or wrong-version file is refused before anything is written.", args, stderr); err != nil {
		return err
	}
	if *file == "" {
		return usage("--snapshot: empty; name the snapshot file")
	}
	if *name == "" {
		return usage("--node-name: empty")
	}
	peers, err := parseCluster(*cluster)
	if err != nil {
		return usage("%v", err)
	}
	res, err := backup.Restore(backup.RestoreConfig{File: *file, RaftDir: filepath.Join(*dataDir, "raft"), Name: *name, Cluster: peers})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored revision %d into %s: cluster %x, epoch %d (was %d)\n",
		res.Header.GetRevision(), filepath.Join(*dataDir, "raft"), res.ClusterID, res.Epoch, res.Header.GetEpoch())
	return nil
}

func recoverCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("recover", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "data/controlplane", "the surviving member's --data-dir")
	name := fs.String("node-name", "", "the surviving member's --node-name")
	force := fs.Bool("force", false, "recover even though other members answer on their raft address")
	maxRevisions := fs.Int64("max-revisions", 100000, "the member's --max-revisions")
	maxHistory := fs.Int64("max-history-bytes", fsm.DefaultMaxHistoryBytes, "the member's --max-history-bytes")
	if err := parse(fs, "recover", "Turns a stopped member's data directory into a one-member cluster holding every entry of its log, with a new cluster id, after the quorum is lost for good. The old directory is kept beside it. Refuses while another member answers, unless --force. Then start the member as before and add new members with MemberAdd and --join.", args, stderr); err != nil {
		return err
	}
	if *name == "" {
		return usage("--node-name: empty")
	}
	res, err := backup.Recover(ctx, backup.RecoverConfig{
		RaftDir: filepath.Join(*dataDir, "raft"), Name: *name, Force: *force,
		FSM: fsm.Config{MaxRevisions: *maxRevisions, MaxHistoryBytes: *maxHistory},
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recovered revision %d (log index %d) as a one-member cluster %x; the old directory is %s\n",
		res.Revision, res.Last, res.ClusterID, res.Saved)
	return nil
}
