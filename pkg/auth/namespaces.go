package auth

// Parts of the resource tree that belong to a role rather than to whoever
// holds the write scope. The control plane enforces them on every read and
// write of its API.
const (
	// NotifierPrefix is the notifier's namespace: subscriptions and their
	// state. Only notifier nodes write it; people change subscriptions
	// through the Notifier API, which validates them.
	NotifierPrefix = "/notifier/"
	// NotifierSecretsPrefix holds subscription signing secrets,
	// /notifier/secrets/<subscription name>. Readable only by notifier
	// nodes and admin operators; to every other caller the keys do not
	// exist.
	NotifierSecretsPrefix = NotifierPrefix + "secrets/"
)

// WritesNotifier reports whether id may write under NotifierPrefix: only a
// node performing the notifier role.
func WritesNotifier(id Identity) bool { return id.Performs(RoleNotifier) }

// ReadsNotifierSecrets reports whether id may read under
// NotifierSecretsPrefix: notifier nodes and admin operators.
func ReadsNotifierSecrets(id Identity) bool {
	return id.Performs(RoleNotifier) || id.Kind == KindOperator && id.Has(ScopeAdmin)
}

// EventSource is how events name id as their source: a node by its name,
// an operator as "operator:<token name>", so that no operator token can
// pass for a node.
func EventSource(id Identity) string {
	if id.Kind == KindOperator {
		return "operator:" + id.Name
	}
	return id.Name
}
