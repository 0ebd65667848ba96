package client

import (
	"fmt"
	"time"
)

// State is where a Conn stands in its life cycle.
type State int32

const (
	// StateConnecting: Dial is creating the session.
	StateConnecting State = iota
	// StateConnected: the session is bound to a live connection.
	StateConnected
	// StateReconnecting: the connection was lost and the session is being
	// continued on a member; calls queue meanwhile.
	StateReconnecting
	// StateSessionLost: the session could not be continued; the Conn is
	// unusable and every call fails with ErrSessionExpired.
	StateSessionLost
	// StateClosed: Close was called.
	StateClosed
)

// String implements fmt.Stringer.
func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateSessionLost:
		return "session lost"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// EventType says what an Event reports.
type EventType int

const (
	// EventConnected: the session was created or continued on Endpoint.
	EventConnected EventType = iota + 1
	// EventReconnecting: the connection to Endpoint was lost or abandoned
	// (Err says why); the session is being continued elsewhere.
	EventReconnecting
	// EventSessionLost: the session is over (Err matches ErrSessionExpired
	// and carries the cause); pending calls failed. It is the last event.
	// No new session is created: create one with a new Dial.
	EventSessionLost
	// EventBreakerOpened: Endpoint's circuit breaker opened; the endpoint
	// is skipped until the breaker lets a trial attempt through.
	EventBreakerOpened
	// EventBreakerClosed: Endpoint's circuit breaker closed again after a
	// successful trial attempt.
	EventBreakerClosed
	// EventClosed: Close was called while the session was alive. It is the
	// last event; after EventSessionLost no EventClosed follows.
	EventClosed
)

// String implements fmt.Stringer.
func (t EventType) String() string {
	switch t {
	case EventConnected:
		return "connected"
	case EventReconnecting:
		return "reconnecting"
	case EventSessionLost:
		return "session lost"
	case EventBreakerOpened:
		return "breaker opened"
	case EventBreakerClosed:
		return "breaker closed"
	case EventClosed:
		return "closed"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// Event reports a change in a Conn's connection state. Events are delivered
// in the order they happened; see WithEvents and WithEventHandler for what
// happens when the receiver falls behind.
type Event struct {
	Type     EventType
	Time     time.Time
	Endpoint string // the endpoint concerned, when there is one
	Err      error  // the cause, for EventReconnecting and EventSessionLost
}

// String implements fmt.Stringer.
func (e Event) String() string {
	s := e.Type.String()
	if e.Endpoint != "" {
		s += " " + e.Endpoint
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}
