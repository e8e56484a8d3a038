package replica

import (
	"errors"

	"github.com/hivemind/hivemind/services/controlplane/internal/raftnode"
)

// Errors the API edge turns into gRPC codes.
var (
	// ErrNoQuorum: the cluster has no quorum (or no leader) right now;
	// writes and linearizable reads cannot be served. UNAVAILABLE.
	ErrNoQuorum = raftnode.ErrNoQuorum
	// ErrUnavailable: retry later, possibly on another node. UNAVAILABLE.
	ErrUnavailable = errors.New("unavailable")
	// ErrBadRequest: the request is malformed. INVALID_ARGUMENT.
	ErrBadRequest = errors.New("bad request")
	// ErrFailedPrecondition: the request does not fit the current state. FAILED_PRECONDITION.
	ErrFailedPrecondition = errors.New("failed precondition")
	// ErrNotFound: no such member. NOT_FOUND.
	ErrNotFound = errors.New("not found")
)
