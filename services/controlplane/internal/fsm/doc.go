// Package fsm is the control plane's replicated state machine: the event
// log, the resource tree, intents with leases, and the idempotency window.
//
// It is pure. Apply takes a command in raft log order and returns its
// result and the events it produced; it reads no clock, does no I/O and
// starts no goroutine, so every replica that applies the same commands ends
// in the same state, and tests drive it without a network. A read/write
// mutex lets the API read while the raft loop applies.
//
// # Revisions and events
//
// A command that changes the tree, the log or an intent's holder or state
// takes the next revision (no gaps) and all its events share it. A command
// that changes none of these keeps the revision: a rejected command, a
// replayed idempotency key, a put or delete lost to last-writer-wins, a
// delete that matched nothing, a txn whose branch only reads, a claim that
// was not granted, a compaction to a revision already dropped, and a
// LeaderChange (it only pushes lease deadlines later, which no reader of the
// tree or the log observes).
//
// The events, their hook and uri:
//
//	kv.put             CREATE or MODIFY  key     payload: value; kv: the key after
//	kv.delete          DELETE            key     one per key deleted; kv: the key before
//	(appended)         as sent           as sent AppendEvent: the request's type, hook,
//	                                             uri, ttl, payload, attachments; source
//	                                             is the command's source, never the
//	                                             request's
//	intent.claimed     CREATE or MODIFY  key     first claim (CREATE), or after release
//	                                             or lease expiry (MODIFY)
//	intent.renewed     MODIFY            key     the holder claimed again
//	intent.completed   MODIFY            key
//	intent.released    MODIFY            key
//	cluster.compacted  MODIFY  /cluster/epoch    payload {"epoch":E,"oldest_revision":R}
//
// Intent events carry a JSON payload {"holder", "state", "claims",
// "expires_at" (RFC 3339, while claimed), "outcome" (when completed)}.
//
// An event id is hlc.NewID(ts, proposer, n) for the n-th event of the
// command, ts being the command's HLC stamp. Event time is ts's physical
// part.
//
// # Time
//
// The only time the machine knows is the hybrid logical clock timestamp the
// leader stamped on each command when proposing it. Timestamps are forced to
// increase with the log (a command stamped at or before its predecessor is
// treated as one tick later), so event ids increase with revisions even
// across leader changes. A command with more than 65,536 events uses one
// more tick per 65,536, because the id's sequence number has 16 bits.
//
// # Last writer wins
//
// Keys under /nodes/ are owned by one node, which stamps each write with
// its own HLC (PutRequest.hlc, DeleteRequest.hlc; 0 means the command's
// stamp). A put or delete older than the stored key's stamp is dropped, so
// a late retry never overwrites a newer value. Elsewhere the log order
// decides. A writer's stamp far ahead of the leader's would win forever, so
// the leader refuses one more than its configured skew ahead of the
// command's stamp before proposing it (CheckWriterClock); the machine
// itself applies whatever stamp the log holds. Transactions are guarded by their own compares and do not take
// part in last-writer-wins; their writes are stamped with the command's HLC.
//
// # Leases
//
// An intent's lease runs out when a later command's timestamp passes its
// expiry (expires_at < now; now is the command's stamp). Leader clocks are
// not comparable — a new leader's clock may be ahead of the old one's — so a
// lease would otherwise shrink when leadership moves. A new leader therefore
// proposes a LeaderChange command first, and applying it extends every
// claimed lease to at least one full lease length from the new leader's
// clock. A lease can be held longer than asked across a leader change,
// never shorter: it is measured so that it survives a leader change.
//
// A claim is granted when the intent is new, released, expired, or already
// held by the same holder (a renewal, which restarts the lease). A completed
// intent is never granted again; the response carries it so the caller sees
// the outcome. Complete and release need the current holder of a claimed
// intent (an expired lease not yet taken over still counts) and are
// otherwise rejected with FAILED_PRECONDITION.
//
// # Idempotency
//
// The results of the last Config.IdempotencyWindow commands that carried an
// idempotency key (10,000 by default) are kept, oldest forgotten first, and
// are part of the snapshot so every replica agrees. A command whose key is
// remembered gets the stored result, rejections included, and changes
// nothing.
//
// # Retention
//
// The event log keeps the last Config.MaxRevisions revisions (100,000 by
// default) in memory, and at most Config.MaxHistoryBytes of encoded events
// (256 MiB by default, the latest revision always kept whatever its size);
// older revisions are dropped whole, oldest first, without changing the
// epoch. Sizes are the events' encoded sizes, so members with the same
// configuration drop the same revisions. Compact(revision) drops every revision before it, advances the
// epoch and emits cluster.compacted; a revision after the current one is
// rejected with OUT_OF_RANGE on field "revision"; one at or before the
// oldest retained revision is a no-op. Reading older history fails with
// ErrCompacted: "compacted; oldest retained is N".
//
// # Limits
//
// Requests are checked by ValidateCommand before they are proposed (and
// again when applied, so a bad entry can never be half applied). Errors are
// *FieldError values naming the field, such as success[2].put.key.
//
//	key                 1..1024 bytes (MaxKeyBytes) of UTF-8, starts with
//	                    "/", no empty ("//"), "." or ".." segment, no
//	                    control characters (C0, DEL, C1); may end in "/"
//	prefix delete       not "" or "/" (name a narrower prefix)
//	value               at most 1 MiB (MaxValueBytes)
//	event type          1..128 characters of [a-z0-9_.-] (MaxEventTypeLen)
//	event hook          a value of the Hook enum
//	event payload       payload plus attachments (data, name, content type)
//	                    at most 1 MiB (MaxEventBytes)
//	event attachments   at most 16 (MaxAttachments)
//	event uri           a key, or empty; not under /members/ (PERMISSION_DENIED)
//	event type family   not one the machine emits (ReservedFamilies: cluster,
//	                    intent, kv, member, subscription; PERMISSION_DENIED)
//	event ttl           hops <= max_hops when max_hops > 0; valid expires_at
//	txn                 at most 128 compares (MaxTxnCompares) and 128 ops
//	                    per branch (MaxTxnOps); compare target and result
//	                    not UNSPECIFIED; compare value at most 1 MiB; keys
//	                    and values of all its compares and ops at most
//	                    4 MiB together (MaxTxnBytes)
//	intent key          key rules
//	holder, source,     1..256 bytes (MaxHolderBytes); source and proposer
//	proposer            may be empty
//	intent lease        1s..1h (MinLease, MaxLease), default 30s
//	intent outcome      at most 1 MiB
//	idempotency key     at most 128 bytes (MaxIdempotencyKeyBytes)
//	compact revision    > 0; after the current revision: OUT_OF_RANGE
//	range limit         0..10000 (MaxRangeLimit); 0 means 1000
//	watch               start_revision 0..current+1, later: OUT_OF_RANGE;
//	                    prefix empty or a key; at most 32 types (MaxWatchTypes)
//	                    each an event type; progress_interval >= 0
package fsm
