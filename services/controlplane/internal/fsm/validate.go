package fsm

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	raftv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/raft/v1"
	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

// Limits on requests; see the package documentation.
const (
	MaxKeyBytes            = 1024
	MaxValueBytes          = 1 << 20
	MaxEventTypeLen        = 128
	MaxEventBytes          = 1 << 20
	MaxAttachments         = 16
	MaxTxnCompares         = 128
	MaxTxnOps              = 128
	MaxTxnBytes            = 4 << 20 // keys, values and compare values of one txn together
	MaxHolderBytes         = 256     // also bounds node names (source, proposer)
	MaxIdempotencyKeyBytes = 128
	DefaultRangeLimit      = 1000
	MaxRangeLimit          = 10000
	MaxWatchTypes          = 32
	MinLease               = 1_000 // milliseconds
	MaxLease               = 3_600_000
	DefaultLease           = 30_000
)

// FieldError says which request field is wrong, or not allowed, and why.
type FieldError struct {
	Field  string
	Reason string
	// Code is INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION or
	// PERMISSION_DENIED.
	Code codes.Code
}

func (e *FieldError) Error() string {
	if e.Code == codes.PermissionDenied {
		return fmt.Sprintf("%s not allowed: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Reason)
}

func invalid(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Code: codes.InvalidArgument}
}

func outOfRange(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Code: codes.OutOfRange}
}

// ValidateKey checks a resource path: see the package documentation. A
// trailing "/" is allowed, so a key can name a directory-like node.
func ValidateKey(field, key string) error {
	switch {
	case key == "":
		return invalid(field, "must not be empty")
	case len(key) > MaxKeyBytes:
		return invalid(field, "%d bytes, at most %d", len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return invalid(field, "not valid UTF-8")
	case key[0] != '/':
		return invalid(field, `must start with "/"`)
	}
	for i, r := range key {
		if unicode.IsControl(r) {
			return invalid(field, "control character %U at byte %d", r, i)
		}
	}
	segs := strings.Split(key[1:], "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch {
		case s == "" && !last:
			return invalid(field, `empty path segment ("//")`)
		case s == "." || s == "..":
			return invalid(field, `"." and ".." segments are not allowed`)
		}
	}
	return nil
}

// validatePrefix checks a key prefix: like a key, but may be empty or end
// in the middle of a segment.
func validatePrefix(field, prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(field, prefix)
}

// ValidateCommand checks a command's request against the limits. Field
// names in its errors are those of the request inside the command (key,
// success[2].put.key, lease), which is what the API's caller sent.
func ValidateCommand(cmd *raftv1.Command) error {
	if len(cmd.GetIdempotencyKey()) > MaxIdempotencyKeyBytes {
		return invalid("idempotency_key", "%d bytes, at most %d", len(cmd.GetIdempotencyKey()), MaxIdempotencyKeyBytes)
	}
	if len(cmd.GetSource()) > MaxHolderBytes {
		return invalid("source", "%d bytes, at most %d", len(cmd.GetSource()), MaxHolderBytes)
	}
	if len(cmd.GetProposer()) > MaxHolderBytes {
		return invalid("proposer", "%d bytes, at most %d", len(cmd.GetProposer()), MaxHolderBytes)
	}
	switch op := cmd.GetOp().(type) {
	case *raftv1.Command_Put:
		return validatePut("", op.Put.GetKey(), op.Put.GetValue())
	case *raftv1.Command_Delete:
		if op.Delete.GetPrefix() {
			return validatePrefixDelete("key", op.Delete.GetKey())
		}
		return validateWritable("key", op.Delete.GetKey())
	case *raftv1.Command_Txn:
		return validateTxn(op.Txn)
	case *raftv1.Command_AppendEvent:
		return validateEvent(op.AppendEvent)
	case *raftv1.Command_ClaimIntent:
		if err := validateIntent(op.ClaimIntent.GetKey(), op.ClaimIntent.GetHolder()); err != nil {
			return err
		}
		if l := op.ClaimIntent.GetLease(); l != nil {
			ms := l.AsDuration().Milliseconds()
			if !l.IsValid() || ms < MinLease || ms > MaxLease {
				return invalid("lease", "%s is outside 1s..1h", l.AsDuration())
			}
		}
		return nil
	case *raftv1.Command_CompleteIntent:
		if len(op.CompleteIntent.GetOutcome()) > MaxValueBytes {
			return invalid("outcome", "at most %d bytes", MaxValueBytes)
		}
		return validateIntent(op.CompleteIntent.GetKey(), op.CompleteIntent.GetHolder())
	case *raftv1.Command_ReleaseIntent:
		return validateIntent(op.ReleaseIntent.GetKey(), op.ReleaseIntent.GetHolder())
	case *raftv1.Command_Compact:
		if op.Compact.GetRevision() <= 0 {
			return invalid("revision", "must be positive")
		}
		return nil
	case *raftv1.Command_LeaderChange:
		return nil
	case *raftv1.Command_MemberJoin:
		return ValidateJoin(op.MemberJoin)
	case *raftv1.Command_MemberSetState:
		return validateSetState(op.MemberSetState)
	case *raftv1.Command_MemberLeave:
		return ValidateNodeName("name", op.MemberLeave.GetName())
	case nil:
		return invalid("op", "command has no operation")
	default:
		return invalid("op", "unknown operation %T", op)
	}
}

func validatePrefixDelete(field, key string) error {
	if key == "" || key == "/" {
		return invalid(field, "deleting every key with a prefix delete is not allowed; name a narrower prefix")
	}
	return validateWritable(field, key)
}

// validateWritable checks a key a client writes: a valid key outside the
// member registry.
func validateWritable(field, key string) error {
	if err := ValidateKey(field, key); err != nil {
		return err
	}
	if reserved(key) {
		return invalid(field, "%s is the member registry, written only by Membership Join and Leave", registry.Prefix)
	}
	return nil
}

func validatePut(path, key string, value []byte) error {
	if err := validateWritable(path+"key", key); err != nil {
		return err
	}
	if len(value) > MaxValueBytes {
		return invalid(path+"value", "%d bytes, at most %d", len(value), MaxValueBytes)
	}
	return nil
}

func validateTxn(txn *hivemindv1.TxnRequest) error {
	if n := txnBytes(txn); n > MaxTxnBytes {
		return invalid("txn", "keys and values add up to %d bytes, at most %d", n, MaxTxnBytes)
	}
	if n := len(txn.GetCompares()); n > MaxTxnCompares {
		return invalid("compares", "%d compares, at most %d", n, MaxTxnCompares)
	}
	for i, c := range txn.GetCompares() {
		f := fmt.Sprintf("compares[%d].", i)
		if err := ValidateKey(f+"key", c.GetKey()); err != nil {
			return err
		}
		if _, ok := hivemindv1.Compare_Target_name[int32(c.GetTarget())]; !ok || c.GetTarget() == hivemindv1.Compare_TARGET_UNSPECIFIED {
			return invalid(f+"target", "must be one of VALUE, VERSION, CREATE_REVISION, MOD_REVISION")
		}
		if _, ok := hivemindv1.Compare_Result_name[int32(c.GetResult())]; !ok || c.GetResult() == hivemindv1.Compare_RESULT_UNSPECIFIED {
			return invalid(f+"result", "must be one of EQUAL, NOT_EQUAL, GREATER, LESS")
		}
		if len(c.GetValue()) > MaxValueBytes {
			return invalid(f+"value", "at most %d bytes", MaxValueBytes)
		}
	}
	for _, branch := range []struct {
		name string
		ops  []*hivemindv1.TxnOp
	}{{"success", txn.GetSuccess()}, {"failure", txn.GetFailure()}} {
		if len(branch.ops) > MaxTxnOps {
			return invalid(branch.name, "%d ops, at most %d", len(branch.ops), MaxTxnOps)
		}
		for i, op := range branch.ops {
			f := fmt.Sprintf("%s[%d].", branch.name, i)
			switch o := op.GetOp().(type) {
			case *hivemindv1.TxnOp_Put:
				if err := validatePut(f+"put.", o.Put.GetKey(), o.Put.GetValue()); err != nil {
					return err
				}
			case *hivemindv1.TxnOp_Delete:
				var err error
				if o.Delete.GetPrefix() {
					err = validatePrefixDelete(f+"delete.key", o.Delete.GetKey())
				} else {
					err = validateWritable(f+"delete.key", o.Delete.GetKey())
				}
				if err != nil {
					return err
				}
			case *hivemindv1.TxnOp_Get:
				if err := ValidateKey(f+"get.key", o.Get.GetKey()); err != nil {
					return err
				}
			default:
				return invalid(f+"op", "must be one of put, delete, get")
			}
		}
	}
	return nil
}

// txnBytes is the size of what a transaction carries (keys and values).
func txnBytes(txn *hivemindv1.TxnRequest) int {
	n := 0
	for _, c := range txn.GetCompares() {
		n += len(c.GetKey()) + len(c.GetValue())
	}
	for _, ops := range [][]*hivemindv1.TxnOp{txn.GetSuccess(), txn.GetFailure()} {
		for _, op := range ops {
			n += len(op.GetPut().GetKey()) + len(op.GetPut().GetValue()) + len(op.GetDelete().GetKey()) + len(op.GetGet().GetKey())
		}
	}
	return n
}

func validEventType(t string) bool {
	if t == "" || len(t) > MaxEventTypeLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func validateEvent(e *hivemindv1.AppendEventRequest) error {
	if !validEventType(e.GetType()) {
		return invalid("type", "must be 1..%d characters of [a-z0-9_.-], got %q", MaxEventTypeLen, e.GetType())
	}
	if _, ok := hivemindv1.Hook_name[int32(e.GetHook())]; !ok {
		return invalid("hook", "unknown hook %d", e.GetHook())
	}
	if e.GetUri() != "" {
		if err := ValidateKey("uri", e.GetUri()); err != nil {
			return err
		}
	}
	if err := CheckAppendedByCaller(e); err != nil {
		return err
	}
	if len(e.GetSource()) > MaxHolderBytes {
		return invalid("source", "at most %d bytes", MaxHolderBytes)
	}
	if len(e.GetAttachments()) > MaxAttachments {
		return invalid("attachments", "%d attachments, at most %d", len(e.GetAttachments()), MaxAttachments)
	}
	size := len(e.GetPayload())
	for _, a := range e.GetAttachments() {
		size += len(a.GetData()) + len(a.GetName()) + len(a.GetContentType())
	}
	if size > MaxEventBytes {
		return invalid("payload", "payload and attachments are %d bytes, at most %d", size, MaxEventBytes)
	}
	if ttl := e.GetTtl(); ttl != nil && ttl.GetMaxHops() > 0 && ttl.GetHops() > ttl.GetMaxHops() {
		return invalid("ttl.hops", "%d hops exceed max_hops %d", ttl.GetHops(), ttl.GetMaxHops())
	}
	if exp := e.GetTtl().GetExpiresAt(); exp != nil && !exp.IsValid() {
		return invalid("ttl.expires_at", "not a valid timestamp")
	}
	return nil
}

func validateIntent(key, holder string) error {
	if err := ValidateKey("key", key); err != nil {
		return err
	}
	if holder == "" || len(holder) > MaxHolderBytes {
		return invalid("holder", "must be 1..%d bytes", MaxHolderBytes)
	}
	return nil
}

// ValidateGet checks a Get request.
func ValidateGet(req *hivemindv1.GetRequest) error { return ValidateKey("key", req.GetKey()) }

// ValidateRange checks a Range request.
func ValidateRange(req *hivemindv1.RangeRequest) error {
	if err := validatePrefix("prefix", req.GetPrefix()); err != nil {
		return err
	}
	if l := req.GetLimit(); l < 0 || l > MaxRangeLimit {
		return invalid("limit", "%d is outside 0..%d", l, MaxRangeLimit)
	}
	if len(req.GetStartAfter()) > MaxKeyBytes {
		return invalid("start_after", "at most %d bytes", MaxKeyBytes)
	}
	return nil
}

// ValidateWatch checks a Watch request against the current revision.
func ValidateWatch(req *hivemindv1.WatchRequest, current int64) error {
	if req.GetStartRevision() < 0 {
		return invalid("start_revision", "must not be negative")
	}
	if req.GetStartRevision() > current+1 {
		return outOfRange("start_revision", "%d is after the current revision %d", req.GetStartRevision(), current)
	}
	if err := validatePrefix("prefix", req.GetPrefix()); err != nil {
		return err
	}
	if len(req.GetTypes()) > MaxWatchTypes {
		return invalid("types", "%d types, at most %d", len(req.GetTypes()), MaxWatchTypes)
	}
	for i, t := range req.GetTypes() {
		if !validEventType(t) {
			return invalid(fmt.Sprintf("types[%d]", i), "must be 1..%d characters of [a-z0-9_.-]", MaxEventTypeLen)
		}
	}
	if d := req.GetProgressInterval(); d != nil && (!d.IsValid() || d.AsDuration() < 0) {
		return invalid("progress_interval", "must be a non-negative duration")
	}
	return nil
}
