package api

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hivemind/hivemind/pkg/auth"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/controlplane/internal/fsm"
)

// The rules below depend on who calls, so they live at the API rather than
// in the state machine. A call without an identity reaches them only on a
// server run without an authenticator (in-process tests), where every
// caller may do everything; a cluster's servers always authenticate.

// checkNamespaceWrites refuses writes under /notifier/ from anyone but a
// notifier node, before anything is proposed. A prefix that covers
// /notifier/ (a prefix delete of "/n") counts as a write under it. Only a
// write there looks the caller up.
func (s *Server) checkNamespaceWrites(ctx context.Context, keys, prefixes []string) error {
	what := ""
	for _, k := range keys {
		if strings.HasPrefix(k, auth.NotifierPrefix) {
			what = "write " + k
			break
		}
	}
	for _, p := range prefixes {
		if what == "" && (strings.HasPrefix(p, auth.NotifierPrefix) || strings.HasPrefix(auth.NotifierPrefix, p)) {
			what = fmt.Sprintf("delete every key under %q", p)
		}
	}
	if what == "" {
		return nil
	}
	if id, ok := auth.FromContext(ctx); ok && !auth.WritesNotifier(id) {
		return notifierOnly(id, what)
	}
	return nil
}

func notifierOnly(id auth.Identity, what string) error {
	return status.Errorf(codes.PermissionDenied, "%s %s may not %s: %s is written only by notifier nodes; subscriptions are managed through the Notifier API",
		id.Kind, id.Name, what, auth.NotifierPrefix)
}

// checkAppend refuses an appended event that speaks for the state machine
// (fsm.CheckAppendedByCaller, first: it holds for every caller) or lies in
// a namespace the caller does not own, and returns the event's source: the
// caller.
//
//   - /notifier/: notifier nodes only.
//   - /nodes/<name>/ (and /nodes/<name> itself): the node <name>, and
//     operators with the admin scope; not other nodes, nor operators with
//     only write, who could otherwise make a host say what it did not.
func (s *Server) checkAppend(ctx context.Context, req *hivemindv1.AppendEventRequest) (source string, err error) {
	// The request's source is never the event's (the machine ignores it);
	// clearing it keeps it out of the log as well.
	req.Source = ""
	if err := fsm.CheckAppendedByCaller(req); err != nil {
		return "", ToStatus(err)
	}
	id, ok := auth.FromContext(ctx)
	if !ok {
		return "", nil
	}
	uri := req.GetUri()
	if strings.HasPrefix(uri, auth.NotifierPrefix) {
		if id, _ = auth.FromContext(ctx); !auth.WritesNotifier(id) {
			return "", status.Errorf(codes.PermissionDenied, "uri not allowed: %s %s may not append events under %s (%s), which only notifier nodes do; subscriptions are managed through the Notifier API",
				id.Kind, id.Name, auth.NotifierPrefix, uri)
		}
	}
	if rest, ok := strings.CutPrefix(uri, auth.NodesPrefix); ok {
		owner, _, _ := strings.Cut(rest, "/")
		switch {
		case id.Kind == auth.KindNode && owner != id.Name:
			return "", status.Errorf(codes.PermissionDenied, "uri not allowed: node %s may not append events under %s: under %s a node appends only within %s%s/",
				id.Name, uri, auth.NodesPrefix, auth.NodesPrefix, id.Name)
		case id.Kind == auth.KindOperator && !id.Has(auth.ScopeAdmin):
			return "", status.Errorf(codes.PermissionDenied, "uri not allowed: operator %s may not append events under %s: a node's part of the tree speaks for that node, and only operators with the admin scope append there",
				id.Name, uri)
		}
	}
	return auth.EventSource(id), nil
}

// readsSecrets reports whether the caller sees keys under
// /notifier/secrets/; to everyone else they do not exist. A node's roles
// are those of its session token, which the registry gave it.
func (s *Server) readsSecrets(ctx context.Context) bool {
	id, ok := auth.FromContext(ctx)
	return !ok || auth.ReadsNotifierSecrets(id)
}

func secretKey(key string) bool { return strings.HasPrefix(key, auth.NotifierSecretsPrefix) }

// mayCoverSecrets says whether keys with prefix may be secrets.
func mayCoverSecrets(prefix string) bool {
	return strings.HasPrefix(prefix, auth.NotifierSecretsPrefix) || strings.HasPrefix(auth.NotifierSecretsPrefix, prefix)
}

// checkTxnReads refuses a transaction whose compares look at a secret the
// caller may not read: a compare's outcome would tell its value a byte at
// a time.
func (s *Server) checkTxnReads(ctx context.Context, req *hivemindv1.TxnRequest) error {
	for i, c := range req.GetCompares() {
		if secretKey(c.GetKey()) && !s.readsSecrets(ctx) {
			id, _ := auth.FromContext(ctx)
			return status.Errorf(codes.PermissionDenied, "compares[%d].key not allowed: %s %s may not read %s: keys under %s are readable only by notifier nodes and admin operators",
				i, id.Kind, id.Name, c.GetKey(), auth.NotifierSecretsPrefix)
		}
	}
	return nil
}

// hideSecretResults blanks the gets of a transaction's answer that read a
// secret the caller may not read, as if the key did not exist. out's
// results are shared with the state machine, so changed ones are copies.
func (s *Server) hideSecretResults(ctx context.Context, out *hivemindv1.TxnResponse) {
	var results []*hivemindv1.TxnOpResult
	for i, r := range out.GetResults() {
		if r.GetKv() == nil || !secretKey(r.GetKv().GetKey()) {
			continue
		}
		if results == nil && s.readsSecrets(ctx) {
			return
		}
		if results == nil {
			results = append([]*hivemindv1.TxnOpResult(nil), out.GetResults()...)
		}
		results[i] = &hivemindv1.TxnOpResult{Deleted: r.GetDeleted()}
	}
	if results != nil {
		out.Results = results
	}
}

// withoutSecrets drops the events about secrets from a watch response. A
// revision's events are in one response, so the rest of the revision stays
// whole; a response left with no event is not sent, and the watch's
// progress notifications still say how far it has come.
func withoutSecrets(send func(*hivemindv1.WatchResponse) error) func(*hivemindv1.WatchResponse) error {
	return func(resp *hivemindv1.WatchResponse) error {
		if !slices.ContainsFunc(resp.GetEvents(), aboutSecret) {
			return send(resp)
		}
		evs := slices.DeleteFunc(slices.Clone(resp.GetEvents()), aboutSecret)
		if len(evs) == 0 && !resp.GetProgress() {
			return nil
		}
		return send(&hivemindv1.WatchResponse{Header: resp.GetHeader(), Events: evs, Progress: resp.GetProgress()})
	}
}

func aboutSecret(e *hivemindv1.Event) bool {
	return secretKey(e.GetUri()) || secretKey(e.GetKv().GetKey())
}
