package subscription

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	hivemindv1 "github.com/hivemind/hivemind/pkg/gen/hivemind/v1"
	"github.com/hivemind/hivemind/services/notifier/internal/delivery"
	"github.com/hivemind/hivemind/services/notifier/internal/filter"
	"github.com/hivemind/hivemind/services/notifier/internal/webhook"
)

// Limits on a subscription's fields, documented in docs/notifier.md.
const (
	MaxTypes       = 64
	MaxTypeLen     = 128
	MaxPrefixLen   = 1024
	MaxTargetLen   = 2048
	MaxOpaqueLen   = 4096
	MaxCapability  = 256
	MaxSecretLen   = 256
	MaxBatchWindow = time.Hour
)

var nameRE = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)

// FieldError names the field of a subscription that is wrong and why. The
// API answers it with INVALID_ARGUMENT.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// ValidateName checks a subscription name.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return &FieldError{"name", fmt.Sprintf("%q must be 1 to 63 of a-z, 0-9 and -", name)}
	}
	return nil
}

// Validate checks sub as it is created and compiles its filter (nil when
// it has none); its target must be one a channel of chans takes. A
// *FieldError names what is wrong.
func Validate(sub *hivemindv1.Subscription, c *filter.Compiler, chans *delivery.Channels) (*filter.Filter, error) {
	if sub == nil {
		return nil, &FieldError{"subscription", "missing"}
	}
	if err := ValidateName(sub.GetName()); err != nil {
		return nil, err
	}
	if err := validateTarget(sub, chans); err != nil {
		return nil, err
	}
	seen := map[hivemindv1.Hook]bool{}
	for i, h := range sub.GetHooks() {
		if hookName(h) == "" {
			return nil, &FieldError{fmt.Sprintf("hooks[%d]", i), fmt.Sprintf("%v is not a hook", h)}
		}
		if seen[h] {
			return nil, &FieldError{fmt.Sprintf("hooks[%d]", i), fmt.Sprintf("%v given twice", h)}
		}
		seen[h] = true
	}
	if p := sub.GetPrefix(); p != "" && (!strings.HasPrefix(p, "/") || len(p) > MaxPrefixLen) {
		return nil, &FieldError{"prefix", fmt.Sprintf("must start with / and be at most %d bytes", MaxPrefixLen)}
	}
	if len(sub.GetTypes()) > MaxTypes {
		return nil, &FieldError{"types", fmt.Sprintf("%d types, more than %d", len(sub.GetTypes()), MaxTypes)}
	}
	for i, t := range sub.GetTypes() {
		if t == "" || len(t) > MaxTypeLen || strings.ContainsAny(t, " \t\n") {
			return nil, &FieldError{fmt.Sprintf("types[%d]", i), fmt.Sprintf("%q must be 1 to %d bytes without spaces", t, MaxTypeLen)}
		}
	}
	if len(sub.GetOpaque()) > MaxOpaqueLen {
		return nil, &FieldError{"opaque", fmt.Sprintf("more than %d bytes", MaxOpaqueLen)}
	}
	if c := sub.GetCapability(); len(c) > MaxCapability || !utf8.ValidString(c) {
		return nil, &FieldError{"capability", fmt.Sprintf("must be UTF-8, at most %d bytes", MaxCapability)}
	}
	if s := sub.GetSecret(); s != "" {
		if len(s) > MaxSecretLen {
			return nil, &FieldError{"secret", fmt.Sprintf("more than %d bytes", MaxSecretLen)}
		}
		if _, err := webhook.ParseSecret(s); err != nil {
			return nil, &FieldError{"secret", err.Error()}
		}
	}
	if w := sub.GetBatchWindow(); w != nil {
		d := w.AsDuration()
		switch {
		case !chans.Batches(sub.GetTarget()) && d != 0:
			return nil, &FieldError{"batch_window", "only " + strings.Join(chans.BatchingSchemes(), ", ") + " targets are batched"}
		case d < 0 || d > MaxBatchWindow:
			return nil, &FieldError{"batch_window", fmt.Sprintf("must be between 0 and %v", MaxBatchWindow)}
		}
	}
	if sub.GetFilter() == "" {
		return nil, nil
	}
	f, err := c.Compile(sub.GetFilter())
	if err != nil {
		var ce *filter.CompileError
		if errors.As(err, &ce) {
			return nil, &FieldError{"filter", strings.TrimPrefix(ce.Error(), "filter: ")}
		}
		return nil, &FieldError{"filter", err.Error()}
	}
	return f, nil
}

func validateTarget(sub *hivemindv1.Subscription, chans *delivery.Channels) error {
	t := sub.GetTarget()
	switch {
	case t == "":
		return &FieldError{"target", "missing: a webhook URL or mailto:"}
	case len(t) > MaxTargetLen:
		return &FieldError{"target", fmt.Sprintf("more than %d bytes", MaxTargetLen)}
	}
	ch, err := chans.For(t)
	if err != nil {
		return &FieldError{"target", err.Error()}
	}
	if err := ch.ValidateTarget(t); err != nil {
		return &FieldError{"target", err.Error()}
	}
	return nil
}

func hookName(h hivemindv1.Hook) delivery.Hook {
	return delivery.FromProto(&hivemindv1.Event{Hook: h}).Hook
}
