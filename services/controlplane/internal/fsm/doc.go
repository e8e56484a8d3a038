// Package fsm is the control plane's replicated state machine: the event
// log, the resource tree, intents with leases, and the idempotency window.
//
// It is pure. Apply takes a command in raft log order and returns its
// result and the events it produced; it reads no clock, does no I/O and
// starts no goroutine, so every replica that applies the same commands ends
// in the same state, and tests drive it without a network.
//
// # Time
//
// The only time the machine knows is the hybrid logical clock timestamp the
// leader stamped on each command when proposing it. Timestamps are forced to
// increase with the log (a command stamped earlier than its predecessor is
// treated as one tick later), so event ids increase with revisions.
//
// # Leases
//
// An intent's lease runs out when a later command's timestamp passes its
// expiry. Leader clocks are not comparable — a new leader's clock may be
// ahead of the old one's — so a lease would otherwise shrink when leadership
// moves. A new leader therefore proposes a LeaderChange command first, and
// applying it extends every live lease to at least one full lease length
// from the new leader's clock. A lease can be held longer than asked across
// a leader change, never shorter.
//
// # Limits
//
// Requests are checked by ValidateCommand before they are proposed (and
// again when applied, so a bad entry can never be half applied):
//
//	key                 1..1024 bytes of UTF-8, starts with "/", no empty,
//	                    "." or ".." segment, no control characters
//	value               at most 1 MiB
//	event type          1..128 characters of [a-z0-9_.-]
//	event payload       payload plus attachments at most 1 MiB
//	event uri           a key, or empty
//	attachments         at most 16
//	txn                 at most 128 compares, 128 ops per branch
//	intent key, holder  key rules; holder 1..256 bytes
//	intent lease        1s..1h, default 30s
//	idempotency key     at most 128 bytes
//	range limit         default 1000, at most 10000
//	watch prefix        at most 1024 bytes; at most 32 types
//
// # Retention
//
// The event log keeps the last Config.MaxRevisions revisions (100,000 by
// default); older ones are dropped without changing the epoch. Compact drops
// history explicitly and advances the epoch.
package fsm
