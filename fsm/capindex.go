package fsm

import "container/heap"

// capHeap holds the live sessions that declared one capability, as a
// min-heap ordered by (full, pending server requests, session id), where a
// session is full when it holds as many pending requests as its room. Selecting a
// session for selector-addressed work is then O(1) and keeping the order as
// queues change is O(log n), instead of a scan over every capable session.
// Only the minimum is ever read, and the order is total, so the heap's
// internal layout (which depends on insertion history) never influences a
// decision.
type capHeap []capEntry

// capEntry is one session in one capability's heap; ci is the index of the
// capability in the session's caps, where the session keeps its position.
type capEntry struct {
	s  *session
	ci int
}

func (h capHeap) Len() int { return len(h) }

func (h capHeap) Less(i, j int) bool {
	a, b := h[i].s, h[j].s
	if fa, fb := a.full(), b.full(); fa != fb {
		return fb
	}
	if len(a.pending) != len(b.pending) {
		return len(a.pending) < len(b.pending)
	}
	return a.id.Compare(b.id) < 0
}

func (h capHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].s.heapIdx[h[i].ci] = i
	h[j].s.heapIdx[h[j].ci] = j
}

func (h *capHeap) Push(x any) {
	e := x.(capEntry)
	e.s.heapIdx[e.ci] = len(*h)
	*h = append(*h, e)
}

func (h *capHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = capEntry{}
	*h = old[:len(old)-1]
	e.s.heapIdx[e.ci] = -1
	return e
}

// indexSession adds s to the heap of every capability it declared.
func (m *Machine) indexSession(s *session) {
	s.heapIdx = make([]int, len(s.caps))
	for i, cp := range s.caps {
		h := m.capable[cp]
		if h == nil {
			h = &capHeap{}
			m.capable[cp] = h
		}
		heap.Push(h, capEntry{s: s, ci: i})
	}
}

// unindexSession removes s from its capabilities' heaps.
func (m *Machine) unindexSession(s *session) {
	for i, cp := range s.caps {
		h := m.capable[cp]
		heap.Remove(h, s.heapIdx[i])
		if h.Len() == 0 {
			delete(m.capable, cp)
		}
	}
}

// pendingChanged restores heap order after s's pending count changed.
func (m *Machine) pendingChanged(s *session) {
	for i, cp := range s.caps {
		heap.Fix(m.capable[cp], s.heapIdx[i])
	}
}

// full reports whether selector work must skip s: it holds as many pending
// requests as its room.
func (s *session) full() bool { return len(s.pending) >= s.room }
