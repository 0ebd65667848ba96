// liveness: the keep-alive fast path's shared table.
//
// A keep-alive is the most frequent message a node receives (one per session
// per keep-alive interval) and needs no decision: it is answered where it is
// decoded, on the connection's own goroutine, and the sign of life is noted
// here, without a message to any actor. The keepalive actor takes the notes
// once per tick (Drain), so 100k sessions cost the actors one scan of the
// sessions heard from, not 100k messages per interval through the directory
// and the session actors.
//
// Owns: nothing an actor owns. The session directory mirrors its
// connection → session bindings here (Bind, Unbind, Clear) because only a
// bound connection's keep-alive can be answered without it; the inbox notes
// every message of a bound connection (Heard) and answers its keep-alives;
// the keepalive actor drains the notes and reaps bound connections that
// stayed silent for their session's timeout and a little more (Silent). The table is the
// node's (held by the Inbox), so it survives a restart of any of these
// actors: a restarted directory clears it and rebinds as clients continue; a
// restarted keepalive actor keeps draining it. Bounded by the open
// connections (the transport's MaxConns): one binding per bound connection,
// each noted at most once between two drains.
package actors

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/zraft/zraft/fsm"
)

// livenessShards splits the table so that connection goroutines contend
// only within one shard.
const livenessShards = 64

// binding is one bound connection's liveness state.
type binding struct {
	conn    ConnID
	session fsm.SessionID
	timeout time.Duration
	// at is the last message received from the connection, in nanoseconds
	// after Liveness.base.
	at atomic.Int64
	// heard is set when a keep-alive noted a sign of life that the
	// keepalive actor has not drained yet; the binding is then on its
	// shard's heard list, once.
	heard atomic.Bool
	// acked is the highest AckedUpTo the fast path has seen go to the
	// session actor; a keep-alive acknowledging more goes the slow way.
	acked atomic.Uint64
}

type livenessShard struct {
	mu    sync.RWMutex
	conns map[ConnID]*binding
	heard []*binding
}

// Liveness is the table of bound connections and their signs of life. Its
// methods are safe for concurrent use; a nil *Liveness does nothing.
type Liveness struct {
	base   time.Time
	shards [livenessShards]livenessShard
}

// NewLiveness returns an empty table whose instants are measured from base
// (the node's clock at start).
func NewLiveness(base time.Time) *Liveness {
	l := &Liveness{base: base}
	for i := range l.shards {
		l.shards[i].conns = make(map[ConnID]*binding)
	}
	return l
}

func (l *Liveness) shard(conn ConnID) *livenessShard { return &l.shards[conn%livenessShards] }

func (l *Liveness) since(now time.Time) int64 { return int64(now.Sub(l.base)) }

// Bind records that conn serves session (timeout is its session timeout),
// replacing any earlier binding of conn. now counts as the connection's
// last message.
func (l *Liveness) Bind(conn ConnID, session fsm.SessionID, timeout time.Duration, now time.Time) {
	if l == nil {
		return
	}
	b := &binding{conn: conn, session: session, timeout: timeout}
	b.at.Store(l.since(now))
	s := l.shard(conn)
	s.mu.Lock()
	s.conns[conn] = b
	s.mu.Unlock()
}

// Unbind forgets conn's binding.
func (l *Liveness) Unbind(conn ConnID) {
	if l == nil {
		return
	}
	s := l.shard(conn)
	s.mu.Lock()
	delete(s.conns, conn)
	s.mu.Unlock()
}

// Clear forgets every binding and every note not drained yet.
func (l *Liveness) Clear() {
	if l == nil {
		return
	}
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		clear(s.conns)
		clear(s.heard)
		s.heard = s.heard[:0]
		s.mu.Unlock()
	}
}

// Bound reports the number of bound connections.
func (l *Liveness) Bound() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		n += len(s.conns)
		s.mu.RUnlock()
	}
	return n
}

// Heard notes a message from conn at now. It reports false when conn is not
// bound. When keepAlive is set, the message is a keep-alive acknowledging
// server requests up to ackedUpTo, and Heard also decides whether it may be
// answered here: answer is true when it acknowledges nothing new (the fast
// path: the caller answers it, and the sign of life is noted for the
// keepalive actor); otherwise the caller hands it to the session actor.
func (l *Liveness) Heard(conn ConnID, now time.Time, keepAlive bool, ackedUpTo uint64) (bound, answer bool) {
	if l == nil {
		return false, false
	}
	s := l.shard(conn)
	s.mu.RLock()
	b := s.conns[conn]
	s.mu.RUnlock()
	if b == nil {
		return false, false
	}
	b.at.Store(l.since(now))
	if !keepAlive {
		return true, false
	}
	for {
		acked := b.acked.Load()
		if ackedUpTo <= acked {
			break
		}
		if b.acked.CompareAndSwap(acked, ackedUpTo) {
			// New acknowledgements: the session actor answers this one
			// and reports the sign of life itself.
			return true, false
		}
	}
	if b.heard.CompareAndSwap(false, true) {
		s.mu.Lock()
		// Still bound: a binding dropped meanwhile is not noted (its
		// session's directory entry is gone or moving).
		if s.conns[conn] == b {
			s.heard = append(s.heard, b)
		} else {
			b.heard.Store(false)
		}
		s.mu.Unlock()
	}
	return true, true
}

// LastHeard calls fn, for every bound connection whose session is in
// sessions, with the session, its timeout and the instant of the
// connection's last message (of any kind). The keepalive actor asks it
// before proposing expiries, so that no session is expired while its
// client is still heard on this node, whatever became of the notes.
// fn runs with a shard's read lock held and must not call back.
func (l *Liveness) LastHeard(sessions map[fsm.SessionID]bool, fn func(session fsm.SessionID, timeout time.Duration, at time.Time)) {
	if l == nil || len(sessions) == 0 {
		return
	}
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		for _, b := range s.conns {
			if sessions[b.session] {
				fn(b.session, b.timeout, l.base.Add(time.Duration(b.at.Load())))
			}
		}
		s.mu.RUnlock()
	}
}

// Drain calls fn for every session noted by a keep-alive since the last
// Drain, with its timeout and the instant of its connection's last message,
// and clears the notes. fn runs without any lock held.
func (l *Liveness) Drain(fn func(session fsm.SessionID, timeout time.Duration, at time.Time)) {
	if l == nil {
		return
	}
	var batch []*binding
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		batch = append(batch, s.heard...)
		clear(s.heard)
		s.heard = s.heard[:0]
		s.mu.Unlock()
	}
	for _, b := range batch {
		// Cleared before at is read: a keep-alive after this point notes
		// the binding again for the next Drain.
		b.heard.Store(false)
		fn(b.session, b.timeout, l.base.Add(time.Duration(b.at.Load())))
	}
}

// Silent returns the connections bound to a session whose last message is
// older than that session's timeout plus grace at now: the client sends
// nothing, not even keep-alives, and its session is due to expire. At most
// max are returned; a session for which spare reports true is left out
// (nil spares none).
func (l *Liveness) Silent(now time.Time, grace time.Duration, max int, spare func(fsm.SessionID) bool) []ConnID {
	if l == nil {
		return nil
	}
	var out []ConnID
	t := l.since(now)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.RLock()
		for conn, b := range s.conns {
			if len(out) >= max {
				break
			}
			if t-b.at.Load() > int64(b.timeout+grace) && (spare == nil || !spare(b.session)) {
				out = append(out, conn)
			}
		}
		s.mu.RUnlock()
	}
	return out
}
