package fsm

import (
	"container/heap"
	"fmt"
	"math"
	"slices"
	"time"
)

// Query values accepted by Machine.Lookup (and so by dragonboat's
// SyncRead/StaleRead through fsm/raftsm). A []byte is an application query.
type (
	// SessionQuery asks for one live session. Result: SessionInfo, or
	// ErrSessionNotFound / ErrSessionExpired / ErrSessionClosed.
	SessionQuery struct{ ID SessionID }
	// SessionsQuery lists live sessions in id order, strictly after After,
	// at most Limit of them (Limit <= 0: all). Result: []SessionInfo. Page
	// with After set to the last id of the previous page.
	SessionsQuery struct {
		After SessionID
		Limit int
	}
	// PendingQuery lists a session's unacknowledged server requests with
	// id > After, oldest first, at most Limit (<= 0: all). Result:
	// []ServerRequest, or ErrSessionNotFound / ErrSessionExpired /
	// ErrSessionClosed.
	PendingQuery struct {
		Session SessionID
		After   uint64
		Limit   int
	}
	// LivenessQuery asks for the cluster time and the recorded liveness of
	// the listed sessions, or of every live session when Sessions is nil,
	// all read at one log index. Result: Liveness. A new leader times its
	// sessions from it (see SessionLiveness.Remaining).
	LivenessQuery struct{ Sessions []SessionID }
	// StatsQuery asks for Stats.
	StatsQuery struct{}
	// HashQuery asks for the state hash (uint64), see Machine.Hash.
	HashQuery struct{}
)

// Lookup answers a query value without changing state. It returns
// ErrUnknownQuery for a value of another type.
func (m *Machine) Lookup(q any) (any, error) {
	switch q := q.(type) {
	case []byte:
		return m.Query(q)
	case SessionQuery:
		return m.Session(q.ID)
	case SessionsQuery:
		return m.Sessions(q.After, q.Limit), nil
	case PendingQuery:
		return m.Pending(q.Session, q.After, q.Limit)
	case LivenessQuery:
		return m.Liveness(q.Sessions), nil
	case StatsQuery:
		return m.Stats(), nil
	case HashQuery:
		return m.Hash()
	case MembersQuery:
		return m.Members(), nil
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnknownQuery, q)
	}
}

// Query passes a read-only query to the Application.
func (m *Machine) Query(q []byte) ([]byte, error) { return m.app.Query(q) }

// Clock returns the cluster time.
func (m *Machine) Clock() ClusterTime { return m.clock }

// goneErr tells a query for a missing session why it is missing.
func (m *Machine) goneErr(id SessionID) error {
	switch m.tombIndex[id] {
	case RemovedExpired:
		return fmt.Errorf("%w: %v", ErrSessionExpired, id)
	case RemovedClosed:
		return fmt.Errorf("%w: %v", ErrSessionClosed, id)
	default:
		return fmt.Errorf("%w: %v", ErrSessionNotFound, id)
	}
}

// Session returns one live session's details, including its secret hash for
// ContinueSession checks.
func (m *Machine) Session(id SessionID) (SessionInfo, error) {
	s := m.sessions[id]
	if s == nil {
		return SessionInfo{}, m.goneErr(id)
	}
	return s.info(), nil
}

// Sessions returns live sessions with id > after in id order, at most limit
// (limit <= 0: all). Selecting a page costs O(n log limit) over n sessions.
func (m *Machine) Sessions(after SessionID, limit int) []SessionInfo {
	var ids []SessionID
	if limit <= 0 || limit >= len(m.sessions) {
		ids = make([]SessionID, 0, len(m.sessions))
		for id := range m.sessions {
			if id.Compare(after) > 0 {
				ids = append(ids, id)
			}
		}
		slices.SortFunc(ids, SessionID.Compare)
	} else {
		// Keep the limit smallest ids in a max-heap.
		h := make(idMaxHeap, 0, limit)
		for id := range m.sessions {
			if id.Compare(after) <= 0 {
				continue
			}
			if len(h) < limit {
				heap.Push(&h, id)
			} else if id.Compare(h[0]) < 0 {
				h[0] = id
				heap.Fix(&h, 0)
			}
		}
		ids = []SessionID(h)
		slices.SortFunc(ids, SessionID.Compare)
	}
	out := make([]SessionInfo, len(ids))
	for i, id := range ids {
		out[i] = m.sessions[id].info()
	}
	return out
}

type idMaxHeap []SessionID

func (h idMaxHeap) Len() int           { return len(h) }
func (h idMaxHeap) Less(i, j int) bool { return h[i].Compare(h[j]) > 0 }
func (h idMaxHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idMaxHeap) Push(x any)        { *h = append(*h, x.(SessionID)) }
func (h *idMaxHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Pending returns a copy of a session's unacknowledged server requests with
// id > after, oldest first, at most limit (limit <= 0: all). A new leader or a
// restarted session actor redelivers from it.
func (m *Machine) Pending(id SessionID, after uint64, limit int) ([]ServerRequest, error) {
	s := m.sessions[id]
	if s == nil {
		return nil, m.goneErr(id)
	}
	if after == math.MaxUint64 {
		return []ServerRequest{}, nil
	}
	i, _ := slices.BinarySearchFunc(s.pending, after+1, func(q queued, id uint64) int {
		switch {
		case q.req.ID < id:
			return -1
		case q.req.ID > id:
			return 1
		}
		return 0
	})
	rest := s.pending[i:]
	if limit > 0 && len(rest) > limit {
		rest = rest[:limit]
	}
	out := make([]ServerRequest, len(rest))
	for j, q := range rest {
		out[j] = q.req
	}
	return out, nil
}

// Liveness is the answer to a LivenessQuery: the cluster time and the
// sessions' recorded liveness, read at the same log index.
type Liveness struct {
	Clock ClusterTime
	// Sessions are in id order when all were asked for, otherwise in the
	// order asked; a session that is no longer live is left out.
	Sessions []SessionLiveness
}

// SessionLiveness is one session's timeout and the latest cluster time at
// which the log recorded it alive.
type SessionLiveness struct {
	ID       SessionID
	Timeout  time.Duration
	Liveness ClusterTime
}

// Remaining is how much of the session's timeout was left at cluster time
// clock, by cluster time alone: the timeout minus the time since its
// recorded liveness, clamped to [0, Timeout]. The clamp is what makes it
// safe to use on another clock: however a skewed leader moved cluster time,
// the result is never more than one timeout and never negative.
func (s SessionLiveness) Remaining(clock ClusterTime) time.Duration {
	return min(max(s.Timeout-clock.Sub(s.Liveness), 0), s.Timeout)
}

// Liveness returns the cluster time and the recorded liveness of the listed
// sessions (nil: every live session, in id order), leaving out sessions that
// are not live.
func (m *Machine) Liveness(ids []SessionID) Liveness {
	out := Liveness{Clock: m.clock}
	if ids == nil {
		ids = make([]SessionID, 0, len(m.sessions))
		for id := range m.sessions {
			ids = append(ids, id)
		}
		slices.SortFunc(ids, SessionID.Compare)
	}
	out.Sessions = make([]SessionLiveness, 0, len(ids))
	for _, id := range ids {
		if s := m.sessions[id]; s != nil {
			out.Sessions = append(out.Sessions, SessionLiveness{ID: id, Timeout: s.timeout, Liveness: s.liveness})
		}
	}
	return out
}

// Stats returns counts of the machine's state.
func (m *Machine) Stats() Stats {
	return Stats{
		Clock:                 m.clock,
		Sessions:              len(m.sessions),
		CachedResponses:       m.cachedTotal,
		PendingServerRequests: m.pendingTotal,
		Unassigned:            len(m.unassigned),
		Tombstones:            len(m.tombIndex),
		Applied:               m.applied,
	}
}
