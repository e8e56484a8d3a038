package cli

import (
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
)

func getCmd(g *globals) *cobra.Command {
	var prefix, keysOnly, stale bool
	var limit int64
	cmd := &cobra.Command{
		Use:   "get KEY | get --prefix PREFIX",
		Short: "Read a key, or every key under a prefix",
		Long: `Read a key of the resource tree (linearizable unless --stale), or with
--prefix every key under it, in key order. A missing key exits with 3.`,
		Example: `  hivectl get /app/web/config
  hivectl get --prefix /app/ -o json
  hivectl get --prefix /nodes/ --keys-only`,
		Args: exactArgs("KEY"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			cp, err := cl.controlPlane(ctx)
			if err != nil {
				return err
			}
			if !prefix {
				resp, err := cp.Get(ctx, &hivemindv1.GetRequest{Key: args[0], Stale: stale})
				if err != nil {
					return err
				}
				if !resp.GetFound() {
					return notFoundf("key %s not found (revision %d)", args[0], resp.GetHeader().GetRevision())
				}
				return g.print(struct {
					Header headerOut `json:"header"`
					KV     *kvOut    `json:"kv"`
				}{toHeader(resp.GetHeader()), toKV(resp.GetKv())}, func(w io.Writer) {
					kvTable(w, []*hivemindv1.KeyValue{resp.GetKv()})
				})
			}
			var kvs []*hivemindv1.KeyValue
			var header *hivemindv1.ResponseHeader
			after := ""
			for {
				req := &hivemindv1.RangeRequest{Prefix: args[0], StartAfter: after, Stale: stale, KeysOnly: keysOnly}
				if limit > 0 {
					req.Limit = limit - int64(len(kvs))
				}
				resp, err := cp.Range(ctx, req)
				if err != nil {
					return err
				}
				if header == nil {
					header = resp.GetHeader()
				}
				kvs = append(kvs, resp.GetKvs()...)
				if !resp.GetMore() || len(resp.GetKvs()) == 0 || (limit > 0 && int64(len(kvs)) >= limit) {
					break
				}
				after = kvs[len(kvs)-1].GetKey()
			}
			outs := make([]*kvOut, 0, len(kvs))
			for _, kv := range kvs {
				o := toKV(kv)
				if keysOnly {
					o.Value = nil // not read, rather than empty
				}
				outs = append(outs, o)
			}
			return g.print(struct {
				Header headerOut `json:"header"`
				KVs    []*kvOut  `json:"kvs"`
			}{toHeader(header), outs}, func(w io.Writer) {
				if keysOnly {
					row(w, "KEY", "MOD_REV", "VERSION")
					for _, kv := range kvs {
						row(w, kv.GetKey(), kv.GetModRevision(), kv.GetVersion())
					}
					return
				}
				kvTable(w, kvs)
			})
		}),
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "read every key starting with KEY")
	cmd.Flags().BoolVar(&keysOnly, "keys-only", false, "with --prefix: keys without values")
	cmd.Flags().Int64Var(&limit, "limit", 0, "with --prefix: at most this many keys (0: all)")
	cmd.Flags().BoolVar(&stale, "stale", false, "answer from the member's local state, without a quorum (works when degraded)")
	return cmd
}

func putCmd(g *globals) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE]",
		Short: "Write a key",
		Long: `Write a key of the resource tree. The value is the second argument, the
contents of --file, or standard input when neither is given.`,
		Example: `  hivectl put /app/web/config 'port=8080'
  hivectl put /app/web/cert --file cert.pem
  echo -n v2 | hivectl put /app/web/version`,
		Args: rangeArgs(1, "KEY", "VALUE"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			var value []byte
			switch {
			case len(args) == 2 && file != "":
				return usagef("give the value either as an argument or with --file, not both")
			case len(args) == 2:
				value = []byte(args[1])
			case file != "":
				b, err := os.ReadFile(file)
				if err != nil {
					return usagef("--file: %v", err)
				}
				value = b
			default:
				b, err := io.ReadAll(g.stdin)
				if err != nil {
					return usagef("reading the value from standard input: %v", err)
				}
				value = b
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			cp, err := cl.controlPlane(ctx)
			if err != nil {
				return err
			}
			resp, err := cp.Put(ctx, &hivemindv1.PutRequest{Key: args[0], Value: value})
			if err != nil {
				return err
			}
			return g.print(struct {
				Header  headerOut `json:"header"`
				Applied bool      `json:"applied"`
				KV      *kvOut    `json:"kv,omitempty"`
			}{toHeader(resp.GetHeader()), resp.GetApplied(), toKV(resp.GetKv())}, func(w io.Writer) {
				if !resp.GetApplied() {
					row(w, "not applied: a newer write to "+args[0]+" won")
					return
				}
				row(w, "OK "+args[0]+" revision "+strconv.FormatInt(resp.GetKv().GetModRevision(), 10))
			})
		}),
	}
	cmd.Flags().StringVar(&file, "file", "", "read the value from this file")
	return cmd
}

func delCmd(g *globals) *cobra.Command {
	var prefix bool
	cmd := &cobra.Command{
		Use:     "del KEY | del --prefix PREFIX",
		Aliases: []string{"delete", "rm"},
		Short:   "Delete a key, or every key under a prefix",
		Long:    `Delete a key of the resource tree, or with --prefix every key under it. Deleting a missing key exits with 3.`,
		Example: `  hivectl del /app/web/config
  hivectl del --prefix /app/web/`,
		Args: exactArgs("KEY"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			cp, err := cl.controlPlane(ctx)
			if err != nil {
				return err
			}
			resp, err := cp.Delete(ctx, &hivemindv1.DeleteRequest{Key: args[0], Prefix: prefix})
			if err != nil {
				return err
			}
			if resp.GetDeleted() == 0 && !prefix {
				return notFoundf("key %s not found", args[0])
			}
			return g.print(struct {
				Header  headerOut `json:"header"`
				Deleted int64     `json:"deleted"`
			}{toHeader(resp.GetHeader()), resp.GetDeleted()}, func(w io.Writer) {
				row(w, "deleted "+strconv.FormatInt(resp.GetDeleted(), 10)+" revision "+strconv.FormatInt(resp.GetHeader().GetRevision(), 10))
			})
		}),
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "delete every key starting with KEY")
	return cmd
}

func watchCmd(g *globals) *cobra.Command {
	var prefix bool
	var rev int64
	var types []string
	cmd := &cobra.Command{
		Use:   "watch KEY | watch --prefix PREFIX",
		Short: "Stream the changes of a key or a prefix",
		Long: `Stream the events of a key (or with --prefix of every uri under it) as they
are committed, from --rev on when given (history included), else from now.
A broken stream resumes on another member without a gap or a duplicate.
It runs until interrupted, or for --timeout when set. With -o json, one
object per line.`,
		Example: `  hivectl watch /app/web/config
  hivectl watch --prefix /app/ --rev 1 -o json
  hivectl watch --prefix / --type member.failed --timeout 1m`,
		Args: exactArgs("KEY"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			return g.streamEvents(cmd, args[0], !prefix, rev, time.Time{}, types, false)
		}),
	}
	cmd.Flags().BoolVar(&prefix, "prefix", false, "every uri starting with KEY")
	cmd.Flags().Int64Var(&rev, "rev", 0, "first revision to send (0: only changes from now)")
	cmd.Flags().StringSliceVar(&types, "type", nil, "only these event types (repeat or comma-separate)")
	return cmd
}

func compactCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "compact REVISION",
		Short: "Drop history before a revision (advances the epoch)",
		Long: `Drop the event history before REVISION. The cluster epoch advances; a
watch asking for older history is told which revision is the oldest left.
Needs the admin scope.`,
		Example: `  hivectl compact 100`,
		Args:    exactArgs("REVISION"),
		RunE: g.run(func(cmd *cobra.Command, args []string) error {
			r, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || r <= 0 {
				return usagef("REVISION %q: want a positive integer", args[0])
			}
			ctx, cancel := g.ctx(cmd, false)
			defer cancel()
			cl, err := g.clients()
			if err != nil {
				return err
			}
			cp, err := cl.controlPlane(ctx)
			if err != nil {
				return err
			}
			resp, err := cp.Compact(ctx, &hivemindv1.CompactRequest{Revision: r})
			if err != nil {
				return err
			}
			return g.print(struct {
				Header         headerOut `json:"header"`
				Epoch          uint64    `json:"epoch"`
				OldestRevision int64     `json:"oldest_revision"`
			}{toHeader(resp.GetHeader()), resp.GetEpoch(), resp.GetOldestRevision()}, func(w io.Writer) {
				row(w, "compacted: oldest revision "+strconv.FormatInt(resp.GetOldestRevision(), 10)+", epoch "+strconv.FormatUint(resp.GetEpoch(), 10))
			})
		}),
	}
	return cmd
}
