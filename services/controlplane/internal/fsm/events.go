package fsm

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/pkg/registry"
)

// Event types the state machine emits (see the package documentation);
// the member registry's are in package registry.
const (
	EventPut             = "kv.put"
	EventDelete          = "kv.delete"
	EventIntentClaimed   = "intent.claimed"
	EventIntentRenewed   = "intent.renewed"
	EventIntentCompleted = "intent.completed"
	EventIntentReleased  = "intent.released"
	EventCompacted       = "cluster.compacted"
)

// EmittedEventTypes lists every event type the state machine emits.
var EmittedEventTypes = append([]string{
	EventPut, EventDelete,
	EventIntentClaimed, EventIntentRenewed, EventIntentCompleted, EventIntentReleased,
	EventCompacted,
}, registry.EventTypes...)

// subscriptionFamily is the family of subscription changes. The machine
// records those as kv events under /notifier/, but the name is kept for
// the cluster too, so that no appended event can pass for one.
const subscriptionFamily = "subscription"

// ReservedFamilies are the event type families ("kv" for "kv.put") that
// only the state machine emits: the family of every type it emits, and
// subscription changes. AppendEvent refuses a type in one of them.
var ReservedFamilies = reservedFamilies(EmittedEventTypes)

func reservedFamilies(types []string) []string {
	out := []string{subscriptionFamily}
	for _, t := range types {
		fam, _, _ := strings.Cut(t, ".")
		if !slices.Contains(out, fam) {
			out = append(out, fam)
		}
	}
	slices.Sort(out)
	return out
}

// ReservedEventType returns the reserved family t belongs to ("kv" for
// "kv.put", "kv.anything" and "kv"), or "" when callers may append t.
func ReservedEventType(t string) string {
	fam, _, _ := strings.Cut(t, ".")
	if slices.Contains(ReservedFamilies, fam) {
		return fam
	}
	return ""
}

func denied(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...), Code: codes.PermissionDenied}
}

// CheckAppendedByCaller refuses an appended event that would speak for the
// state machine: a reserved type, or a uri in the member registry, with
// PERMISSION_DENIED. These hold for every caller, and are part of
// ValidateCommand; the namespaces whose rules depend on who calls
// (/notifier/, /nodes/<name>/) are the API's.
func CheckAppendedByCaller(e *hivemindv1.AppendEventRequest) error {
	if fam := ReservedEventType(e.GetType()); fam != "" {
		return denied("type", "%q is in the %s.* family of event types the state machine emits; appended events may not use it", e.GetType(), fam)
	}
	if reserved(e.GetUri()) {
		return denied("uri", "%s is under %s, the member registry, whose events only the state machine emits", e.GetUri(), registry.Prefix)
	}
	return nil
}
