package client

import (
	"time"

	"github.com/zraft/zraft/codec"
)

// This file is the client's retry policy: pure functions that decide what
// happens after each kind of failure, so that table tests pin them down and
// docs/client.md's table ("Retries, redirects and ambiguous outcomes") can
// follow them line by line. The event loop only carries the decisions out.

// cause says why a connection, or a connection attempt, was given up.
type cause int

const (
	// causeTransport: the endpoint did not answer at all: the dial or the
	// transport handshake failed, the session handshake went unanswered, or
	// the connection dropped before the server answered anything.
	causeTransport cause = iota
	// causeDropped: a connection that had been serving the session died or
	// went silent (keep-alives unanswered).
	causeDropped
	// causeRedirect: a member answered with a leader hint.
	causeRedirect
	// causeNoLeader: a member answered that it knows no leader
	// (ClusterUnavailable, or NotLeader or ShuttingDown without a hint).
	causeNoLeader
	// causeRebind: the server no longer binds this connection to the
	// session (SessionNotFound, SessionMoved): continue the session again.
	causeRebind
	// causeRefused: a member refused the session for now (RateLimited,
	// TooManySessions, or another answer that is worth asking again later).
	causeRefused
)

func (c cause) String() string {
	switch c {
	case causeTransport:
		return "transport failure"
	case causeDropped:
		return "connection lost"
	case causeRedirect:
		return "redirect"
	case causeNoLeader:
		return "no leader"
	case causeRebind:
		return "binding lost"
	case causeRefused:
		return "refused"
	}
	return "cause?"
}

// minRedirectGap is the least time between two connection attempts to the
// same address that are not separated by a backoff: it keeps a member that
// names itself (or two that name each other) from making the client spin.
const minRedirectGap = 50 * time.Millisecond

// retryState is the part of the loop's state the policy reads and updates.
type retryState struct {
	// failures counts transport failures since a member last answered
	// anything; it drives the exponential backoff.
	failures int
	// refusals counts session refusals (causeRefused) since the session
	// was last bound; it drives the backoff of those.
	refusals int
}

// retryPlan is what the loop does after giving up a connection.
type retryPlan struct {
	state retryState
	// breakerFailure reports the attempt to the endpoint's breaker as a
	// failure; otherwise the endpoint answered, which counts as a success.
	breakerFailure bool
	// delay is the wait before the next attempt.
	delay time.Duration
	// target says where the next attempt goes.
	target retryTarget
}

type retryTarget int

const (
	targetNext retryTarget = iota // the next endpoint in rotation
	targetHint                    // the hinted leader's address
	targetSame                    // the endpoint just given up
)

// plan decides the next connection attempt after a connection was given up
// for c. r is a uniform random number in [0, 1) for the jitter.
func plan(c cause, st retryState, b backoff, leaderRetry time.Duration, r float64) retryPlan {
	switch c {
	case causeTransport:
		st.failures++
		return retryPlan{state: st, breakerFailure: true, delay: b.delay(st.failures-1, r), target: targetNext}
	case causeDropped:
		// The connection worked, so the next member is worth asking at
		// once; if it fails too, the backoff starts from there.
		st.failures = 0
		return retryPlan{state: st, breakerFailure: true, target: targetNext}
	case causeRedirect:
		st.failures = 0
		return retryPlan{state: st, target: targetHint}
	case causeNoLeader:
		st.failures = 0
		d := backoff{initial: leaderRetry, max: 2 * leaderRetry, factor: 1, jitter: 0.25}
		return retryPlan{state: st, delay: d.delay(0, r), target: targetNext}
	case causeRebind:
		st.failures = 0
		return retryPlan{state: st, target: targetSame}
	default: // causeRefused
		st.failures = 0
		st.refusals++
		return retryPlan{state: st, delay: b.delay(st.refusals-1, r), target: targetNext}
	}
}

// rejectionCause maps a SessionRejected or SessionClosed code to the cause
// the connection is given up for. lost reports codes that end the session
// (or, during Dial, the dial) instead: asking again would get the same
// answer.
func rejectionCause(code codec.Code, hint string) (c cause, lost bool) {
	switch code {
	case codec.CodeNotLeader, codec.CodeShuttingDown, codec.CodeClusterUnavailable:
		if hint != "" {
			return causeRedirect, false
		}
		return causeNoLeader, false
	case codec.CodeSessionExpired, codec.CodeBadSecret, codec.CodeRejected, codec.CodeTooLarge,
		codec.CodeMalformed, codec.CodeUnsupported:
		return 0, true
	case codec.CodeSessionNotFound, codec.CodeSessionMoved:
		return causeRebind, false
	default:
		// RateLimited, TooManySessions, Overloaded, Internal, codes of a
		// newer protocol: worth asking again later.
		return causeRefused, false
	}
}

// retryAction says what the client does itself with a code a server returned
// for a command or a query.
type retryAction int

const (
	// actionFail ends the call with the mapped error.
	actionFail retryAction = iota
	// actionRedirect moves the session to the hinted leader, or asks the
	// other members when there is no hint; the call stays pending and is
	// resent on the next binding with the same id, without using up an
	// attempt.
	actionRedirect
	// actionBackoff resends the same id on the current connection after a
	// backoff delay; the attempt counts against the maximum.
	actionBackoff
	// actionReconnect continues the session on a connection again (the
	// server forgot the binding); the call stays pending.
	actionReconnect
	// actionLost ends the session: everything pending fails with
	// ErrSessionExpired.
	actionLost
	// actionReorder holds the call until an earlier pending command is
	// sent again or completes, then resends it after that one, without
	// using up an attempt (OutOfOrder: nothing ran).
	actionReorder
)

// classify is the retry policy for request and query errors, kept as a pure
// function so that a table test pins it down.
func classify(c codec.Code) retryAction {
	switch c {
	case codec.CodeNotLeader, codec.CodeShuttingDown, codec.CodeClusterUnavailable:
		return actionRedirect
	case codec.CodeOverloaded, codec.CodeOutcomeUnknown, codec.CodeTooManyInFlight:
		return actionBackoff
	case codec.CodeOutOfOrder:
		return actionReorder
	case codec.CodeSessionNotFound, codec.CodeSessionMoved:
		return actionReconnect
	case codec.CodeSessionExpired:
		return actionLost
	default:
		return actionFail
	}
}

// ambiguousCode reports whether a server answer with this code leaves open
// whether the command executed.
func ambiguousCode(c codec.Code) bool { return c == codec.CodeOutcomeUnknown }
