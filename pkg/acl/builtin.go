package acl

// The built-in policies are today's four token scopes, so a token from a
// configuration file (`name=secret:read,write`) means what it meant before
// policies existed: its scopes are the policies of the same names.
var builtins = map[string]*Policy{
	"read": {
		Name:        "read",
		Description: "read everything but policies and tokens: keys, events, intents, subscriptions, members, DNS, nodes, cluster status",
		Rules: []Rule{
			{Resource: KV, Access: Read}, {Resource: Events, Access: Read}, {Resource: Intents, Access: Read},
			{Resource: Subscriptions, Access: Read}, {Resource: Members, Access: Read}, {Resource: DNS, Access: Read},
			{Resource: Node, Access: Read}, {Resource: Cluster, Access: Read},
		},
	},
	"write": {
		Name:        "write",
		Description: "change keys, append events, claim intents, manage subscriptions (without filters)",
		Rules: []Rule{
			{Resource: KV, Access: Write}, {Resource: Events, Access: Write}, {Resource: Intents, Access: Write},
			{Resource: Subscriptions, Access: Write},
		},
	},
	"admin": {
		Name:        "admin",
		Description: "everything: the cluster's members and compaction, snapshots, policies and tokens, and all of read and write",
		Rules: []Rule{
			{Resource: KV, Access: Write}, {Resource: Events, Access: Write}, {Resource: Intents, Access: Write},
			{Resource: Subscriptions, Access: Write}, {Resource: Members, Access: Write}, {Resource: DNS, Access: Write},
			{Resource: Node, Access: Write}, {Resource: Cluster, Access: Write}, {Resource: Snapshot, Access: Write},
			{Resource: ACL, Access: Write},
		},
	},
	"filter": {
		Name:        "filter",
		Description: "register notifier subscriptions with a filter expression",
		Filter:      true,
	},
}

// Builtin returns the built-in policy called name, or nil. Callers must
// not change it.
func Builtin(name string) *Policy { return builtins[name] }

// IsBuiltin reports whether name is a built-in policy's, which cannot be
// created, changed or deleted.
func IsBuiltin(name string) bool { return builtins[name] != nil }
