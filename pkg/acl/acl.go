// Package acl is hivemind's policy language for operator tokens: a policy
// is a list of rules, each granting or denying one kind of access to one
// kind of resource under a key prefix, and a token carries policies.
//
// A decision looks only at the rules of the resource asked about whose
// prefix starts the key asked about. The longest such prefix wins; among
// rules with that same prefix, deny beats allow, and otherwise the widest
// access given counts (write includes read). No rule: denied. So
//
//	kv /app/ write, kv /app/team-b/ deny
//
// writes and reads everything under /app/ except /app/team-b/, and adding
// `kv /app/team-b/public/ read` opens that one subtree again for reading.
//
// The package decides; it does not know gRPC methods. The control plane
// maps each call to (resource, key, access) and asks.
package acl

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Resource is a kind of thing a rule is about.
type Resource string

// The resources. Those marked "by prefix" take a rule's prefix; the others
// are one thing each and their rules have no prefix.
const (
	KV            Resource = "kv"            // keys of the resource tree, by key prefix
	Events        Resource = "events"        // events appended and watched, by URI prefix
	Intents       Resource = "intents"       // intent claims, by key prefix
	Subscriptions Resource = "subscriptions" // notifier subscriptions, by name prefix
	Members       Resource = "members"       // the membership registry: read it, remove members
	DNS           Resource = "dns"           // dns processors' lookups and status
	Node          Resource = "node"          // every node's Info, Ping and Probe
	Cluster       Resource = "cluster"       // control-plane status, members, compaction
	Snapshot      Resource = "snapshot"      // snapshots of the whole state
	ACL           Resource = "acl"           // policies and tokens themselves
)

// Resources lists every resource, in the order they are documented.
var Resources = []Resource{KV, Events, Intents, Subscriptions, Members, DNS, Node, Cluster, Snapshot, ACL}

// ByPrefix reports whether rules of r take a prefix.
func (r Resource) ByPrefix() bool {
	switch r {
	case KV, Events, Intents, Subscriptions:
		return true
	}
	return false
}

// Access is what a rule gives, or what a call needs.
type Access int

const (
	// Read sees the resource.
	Read Access = iota + 1
	// Write changes it, and includes Read.
	Write
	// Deny takes away any access a shorter prefix gave. A call never
	// needs Deny.
	Deny
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case Deny:
		return "deny"
	}
	return fmt.Sprintf("access(%d)", int(a))
}

// ParseAccess reads "read", "write" or "deny".
func ParseAccess(s string) (Access, error) {
	switch s {
	case "read":
		return Read, nil
	case "write":
		return Write, nil
	case "deny":
		return Deny, nil
	}
	return 0, fmt.Errorf("%q is not an access (read, write, deny)", s)
}

// Rule gives Access to Resource under Prefix (empty: all of it).
type Rule struct {
	Resource Resource
	Prefix   string
	Access   Access
}

func (r Rule) String() string {
	if r.Prefix == "" {
		return fmt.Sprintf("%s %s", r.Resource, r.Access)
	}
	return fmt.Sprintf("%s %s %s", r.Resource, r.Prefix, r.Access)
}

// Policy is a named list of rules. Filter is the capability to register
// notifier subscriptions with a filter expression, which run on the
// notifier's CPU; it is apart from the rules because it is not about a
// resource's keys.
type Policy struct {
	Name        string
	Description string
	Rules       []Rule
	Filter      bool
}

// MaxRules bounds a policy's rules, and MaxPrefix a rule's prefix.
const (
	MaxRules  = 256
	MaxPrefix = 1024
)

// Validate refuses a policy that cannot be stored, naming the field.
func (p *Policy) Validate() error {
	if err := ValidateName(p.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if len(p.Rules) > MaxRules {
		return fmt.Errorf("rules: %d rules, at most %d", len(p.Rules), MaxRules)
	}
	for i, r := range p.Rules {
		if !slices.Contains(Resources, r.Resource) {
			return fmt.Errorf("rules[%d].resource: %q is not a resource (%s)", i, r.Resource, resourceList())
		}
		if r.Access < Read || r.Access > Deny {
			return fmt.Errorf("rules[%d].access: must be read, write or deny", i)
		}
		if r.Prefix != "" && !r.Resource.ByPrefix() {
			return fmt.Errorf("rules[%d].prefix: resource %s takes no prefix", i, r.Resource)
		}
		if len(r.Prefix) > MaxPrefix {
			return fmt.Errorf("rules[%d].prefix: %d bytes, at most %d", i, len(r.Prefix), MaxPrefix)
		}
	}
	return nil
}

// ValidateName checks a policy's name: 1–64 characters of a-z, 0-9, '-'
// and '_', starting with a letter.
func ValidateName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%q must have 1 to 64 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '-' || c == '_')
		if !ok {
			return fmt.Errorf("%q: only a-z, 0-9, '-' and '_', starting with a letter", name)
		}
	}
	return nil
}

func resourceList() string {
	names := make([]string, len(Resources))
	for i, r := range Resources {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// Allowed reports whether policies give want on key of res. key is
// ignored for resources that take no prefix.
func Allowed(policies []*Policy, res Resource, key string, want Access) bool {
	if want != Read && want != Write {
		return false
	}
	if !res.ByPrefix() {
		key = ""
	}
	best, deny, given := -1, false, Access(0)
	for _, p := range policies {
		for _, r := range p.Rules {
			if r.Resource != res || !strings.HasPrefix(key, r.Prefix) {
				continue
			}
			switch n := len(r.Prefix); {
			case n > best:
				best, deny, given = n, false, 0
				fallthrough
			case n == best:
				if r.Access == Deny {
					deny = true
				} else {
					given = max(given, r.Access)
				}
			}
		}
	}
	return best >= 0 && !deny && given >= want
}

// AllowedUnder reports whether policies give want on every key under
// prefix of res: a whole range may be read at once. When it is false,
// some keys under prefix may still be allowed one by one (Allowed).
func AllowedUnder(policies []*Policy, res Resource, prefix string, want Access) bool {
	if !Allowed(policies, res, prefix, want) {
		return false
	}
	// A longer rule under the prefix may take some of it away.
	for _, p := range policies {
		for _, r := range p.Rules {
			if r.Resource == res && len(r.Prefix) > len(prefix) && strings.HasPrefix(r.Prefix, prefix) &&
				(r.Access == Deny || r.Access < want) {
				return false
			}
		}
	}
	return true
}

// CanFilter reports whether any of policies carries the filter capability.
func CanFilter(policies []*Policy) bool {
	return slices.ContainsFunc(policies, func(p *Policy) bool { return p.Filter })
}

// Token is an operator token as the cluster stores it: never its secret,
// only the secret's SHA-256.
type Token struct {
	// AccessorID names the token in lists and audit records; it is not
	// a secret.
	AccessorID  string
	SecretHash  [sha256.Size]byte
	Description string
	Policies    []string
	// ExpiresAt is zero for a token that does not expire.
	ExpiresAt time.Time
}

// HashSecret is what a Token keeps of its secret.
func HashSecret(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

// Matches reports whether secret is this token's, in constant time.
func (t *Token) Matches(secret string) bool {
	h := HashSecret(secret)
	return subtle.ConstantTimeCompare(h[:], t.SecretHash[:]) == 1
}

// Expired reports whether the token has run out at now.
func (t *Token) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}
