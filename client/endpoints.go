package client

import (
	"errors"
	"strings"
	"time"

	"github.com/sony/gobreaker/v2"
)

// errEndpointFailure is what the loop reports to a breaker for a transport
// failure or a timeout; breakers only ever see failures that count.
var errEndpointFailure = errors.New("client: endpoint failure")

// endpoint is one server address with its circuit breaker.
type endpoint struct {
	addr string
	cb   *gobreaker.TwoStepCircuitBreaker[struct{}]
	// open mirrors the breaker's state. It is written by OnStateChange,
	// which gobreaker calls synchronously from Allow and the done callback;
	// only the event loop calls those, so the loop owns the field.
	open bool
	// lastTry is when the last connection attempt to addr started.
	lastTry time.Time
}

// pass asks the breaker for an attempt. The returned function reports the
// attempt's outcome (nil for an endpoint that answered, even with a refusal)
// and must be called exactly once. ok is false while the breaker is open.
func (e *endpoint) pass() (done func(error), ok bool) {
	done, err := e.cb.Allow()
	if err != nil {
		return nil, false
	}
	return done, true
}

// fail records a failure seen on an established connection (a keep-alive or
// request timeout, a lost connection).
func (e *endpoint) fail() {
	if done, ok := e.pass(); ok {
		done(errEndpointFailure)
	}
}

// endpointSet is the ordered list of addresses the client may try: the
// addresses given to Dial first, then member addresses learned from the
// cluster and from leader hints, at most maxEndpoints in all. It is owned by
// the event loop.
type endpointSet struct {
	list []*endpoint
	next int // rotation position: the index tried next
	// settings builds the breaker settings for an address.
	settings func(addr string, ep *endpoint) gobreaker.Settings
}

// add returns the endpoint for addr, creating it if there is room. When the
// list is full an unknown address gets a transient endpoint that is not
// remembered.
func (s *endpointSet) add(addr string) *endpoint {
	if e := s.lookup(addr); e != nil {
		return e
	}
	addr = normalAddr(addr)
	e := &endpoint{addr: addr}
	e.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](s.settings(addr, e))
	if len(s.list) < maxEndpoints {
		s.list = append(s.list, e)
	}
	return e
}

// normalAddr is the form endpoints are kept in: host:port, without the
// tcp:// scheme that ZeroMQ users tend to write, so that both spellings of
// one member share one endpoint and one breaker.
func normalAddr(addr string) string { return strings.TrimPrefix(addr, "tcp://") }

// lookup returns the endpoint for addr, or nil when it is not in the list.
func (s *endpointSet) lookup(addr string) *endpoint {
	addr = normalAddr(addr)
	for _, e := range s.list {
		if e.addr == addr {
			return e
		}
	}
	return nil
}

// pick chooses the endpoint for the next connection attempt: target when
// there is one (a leader hint, or the endpoint to bind again) and its breaker
// lets it through, otherwise the next endpoint in rotation whose breaker is
// not open. ok is false when every breaker is open.
func (s *endpointSet) pick(target string) (e *endpoint, done func(error), ok bool) {
	if target != "" {
		e = s.add(target)
		if done, ok = e.pass(); ok {
			return e, done, true
		}
	}
	n := len(s.list)
	for i := 0; i < n; i++ {
		idx := (s.next + i) % n
		e = s.list[idx]
		if done, ok = e.pass(); ok {
			s.next = (idx + 1) % n
			return e, done, true
		}
	}
	return nil, nil, false
}

// skip moves the rotation past addr, so that the next pick without a hint
// starts with the endpoint after it.
func (s *endpointSet) skip(addr string) {
	addr = normalAddr(addr)
	for i, e := range s.list {
		if e.addr == addr {
			s.next = (i + 1) % len(s.list)
			return
		}
	}
}

// breakerSettings builds the circuit breaker of one endpoint. Only the loop
// calls the breaker, so OnStateChange runs on the loop and may touch its
// state; it must not call the breaker back (gobreaker holds its mutex).
func (c *Conn) breakerSettings(addr string, ep *endpoint) gobreaker.Settings {
	threshold := c.opts.breakerFailures
	return gobreaker.Settings{
		Name:        addr,
		MaxRequests: 1,
		Timeout:     c.opts.breakerOpen,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= threshold },
		IsSuccessful: func(err error) bool {
			return err == nil
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			ep.open = to == gobreaker.StateOpen
			c.log.Info("client: breaker state", "endpoint", name, "from", from.String(), "to", to.String())
			switch {
			case to == gobreaker.StateOpen:
				c.emit(Event{Type: EventBreakerOpened, Endpoint: name})
			case to == gobreaker.StateClosed:
				c.emit(Event{Type: EventBreakerClosed, Endpoint: name})
			}
		},
	}
}
