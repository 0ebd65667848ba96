package fsm

import (
	"encoding/hex"
	"fmt"
	"strconv"
)

// CapMaxInFlight is the capability name by which a session limits the
// selector-addressed work it holds unacknowledged: a session that declared
// CapMaxInFlight=n (a decimal integer from 1 to
// Config.MaxPendingServerRequests) is given ToCapable work only while it has
// fewer than n pending requests; the rest goes to other capable sessions or
// waits in the unassigned queue until an acknowledgement frees room. Work
// addressed with ToSession is not limited by it. The client sets it with
// client.WithManualAck(n), so that a worker is never assigned more than it
// works on at once and work flows to workers that have capacity. Any other
// value makes OpenSession StatusInvalid.
const CapMaxInFlight = "zraft.max_in_flight"

// validateInFlight checks a CapMaxInFlight capability, if declared.
func (m *Machine) validateInFlight(caps []Capability) string {
	for _, c := range caps {
		if c.Name != CapMaxInFlight {
			continue
		}
		n, err := strconv.Atoi(c.Value)
		if err != nil || n < 1 || n > m.cfg.MaxPendingServerRequests || strconv.Itoa(n) != c.Value {
			return fmt.Sprintf("fsm: capability %s=%q is not an integer from 1 to %d", CapMaxInFlight, c.Value, m.cfg.MaxPendingServerRequests)
		}
	}
	return ""
}

// sessionRoom returns the room of a session with caps (see session.room). A
// value validateInFlight would refuse (a snapshot written under other
// limits) counts as no limit.
func (m *Machine) sessionRoom(caps []Capability) int {
	for _, c := range caps {
		if c.Name == CapMaxInFlight {
			if n, err := strconv.Atoi(c.Value); err == nil && n >= 1 && n < m.cfg.MaxPendingServerRequests {
				return n
			}
		}
	}
	return m.cfg.MaxPendingServerRequests
}

// AckObserver is an optional interface an Application implements to learn,
// inside Apply, which of its server requests clients acknowledged. The
// machine calls ServerRequestsAcked once per session whose queue an
// AckServerRequests command shortened, in the command's order, with the
// acknowledged requests in id order, after they left the queue (so
// ctx.Pending already excludes them) and before the command's result is
// returned. It is deterministic like Apply: every replica makes the same
// calls with the same arguments, so whatever the application records here is
// replicated state.
//
// What an acknowledgement means depends on how the client acknowledges: a
// client in manual-ack mode (client.WithManualAck) acknowledges after its
// handler finished, so "acknowledged" can mean "done"; a client in the
// default ack-on-receipt mode acknowledges as soon as a request reaches its
// delivery buffer, so it means only "received".
//
// ctx.Session() is the acknowledging session. reqs and their payloads belong
// to the machine and are only valid during the call: copy what you keep, and
// never modify a payload (one copy may back the queues of many sessions).
// Emit and Place are allowed (for example to start the next step of a
// pipeline); work emitted to the acknowledging session gets new ids.
type AckObserver interface {
	ServerRequestsAcked(ctx *Context, session SessionID, reqs []ServerRequest)
}

// MoveObserver is an optional interface an Application implements to follow
// selector-addressed work (ToCapable) that changes hands after Place or Emit
// reported where it went: work moved off a session that expired or closed
// (from is that session, req.ID its id there; called before SessionClosed,
// whose dropped list holds what could not move), and work taken from the
// unassigned queue by a capable session that opened or freed room (from is
// the zero id and req.ID is 0). to says where the work is now: a session and
// its new id there, or Queued. Together with Place's result it lets an
// application always know which session holds each piece of its work. It is
// deterministic like Apply; ctx.Session() is from. Emit and Place are
// allowed. req's payload belongs to the machine and is only valid during the
// call.
type MoveObserver interface {
	ServerRequestMoved(ctx *Context, from SessionID, req ServerRequest, to Placement)
}

// move is one MoveObserver call waiting to be made.
type move struct {
	req ServerRequest
	to  Placement
}

// reportMoves makes the MoveObserver calls for work moved from from.
func (m *Machine) reportMoves(from SessionID, moved []move) {
	for _, mv := range moved {
		m.ctx.session = from
		m.moveObs.ServerRequestMoved(&m.ctx, from, mv.req, mv.to)
	}
}

// Placement says where Context.Place put a server request: the session and
// the request id it got there, or Queued when it waits in the unassigned
// queue because no capable session had room (Session is then zero).
type Placement struct {
	Session SessionID
	ID      uint64
	Queued  bool
}

// String returns "session <hex> request <id>" or "queued: no capable session
// with room".
func (p Placement) String() string {
	if p.Queued {
		return "queued: no capable session with room"
	}
	return fmt.Sprintf("session %v request %d", p.Session, p.ID)
}

// ParseSessionID parses the hexadecimal form SessionID.String writes (32 hex
// digits). A client's id (client.Conn.SessionID, a codec.SessionID) has the
// same underlying type, so code that links both packages converts directly
// with fsm.SessionID(conn.SessionID()); code that only has the text uses
// this. A malformed string gets an error wrapping ErrMalformed.
func ParseSessionID(s string) (SessionID, error) {
	var id SessionID
	if len(s) != 2*len(id) {
		return SessionID{}, fmt.Errorf("%w: session id %q is not %d hex digits", ErrMalformed, s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return SessionID{}, fmt.Errorf("%w: session id %q: %v", ErrMalformed, s, err)
	}
	return id, nil
}
