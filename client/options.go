package client

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zraft/zraft/codec"
)

// Option configures a Conn. Options are applied in order by Dial; an option
// given a value out of range makes Dial fail with ErrInvalidOption.
type Option func(*options)

// options is the resolved configuration of a Conn. It is built by
// defaultOptions and then modified by the caller's Options.
type options struct {
	capabilities    []codec.Capability
	keepAliveMisses int
	backoff         backoff
	maxAttempts     int
	leaderRetry     time.Duration
	window          int
	requestTimeout  time.Duration
	dialTimeout     time.Duration
	maxPending      int
	srHandler       func(ServerRequest)
	srChan          chan<- ServerRequest
	srBuffer        int
	manualAck       int // in-flight limit in manual-ack mode; 0: ack on receipt
	eventHandler    func(Event)
	eventChan       chan<- Event
	noteHandler     func(Notification)
	noteBuffer      int
	tls             *tls.Config
	logger          *slog.Logger
	breakerFailures uint32
	breakerOpen     time.Duration
	limits          codec.Limits

	// errs collects values rejected by options, reported by Dial.
	errs []error
}

// Defaults, named so that the documentation of each option and the code
// cannot drift apart.
const (
	defaultKeepAliveMisses = 3
	defaultBackoffInitial  = 100 * time.Millisecond
	defaultBackoffMax      = 30 * time.Second
	defaultBackoffFactor   = 2.0
	defaultBackoffJitter   = 0.25
	defaultMaxAttempts     = 5
	// defaultLeaderRetry is about a tenth of the servers' default election
	// timeout (1 s), so a new leader is found within one interval of its
	// election without flooding members while there is none.
	defaultLeaderRetry = 150 * time.Millisecond
	// defaultWindow keeps request ids within 512 of the oldest pending one,
	// below the servers' default cache of 1,024 responses per session, so
	// the oldest request can always run (see WithRequestWindow).
	defaultWindow = 512
	// defaultRequestTimeout is above the servers' default proposal timeout
	// (5 s): a request the server is still working on is not sent again,
	// and a server that gave up answers OutcomeUnknown before it fires.
	defaultRequestTimeout  = 7 * time.Second
	defaultDialTimeout     = 5 * time.Second
	defaultMaxPending      = 1024
	defaultSRBuffer        = 64
	defaultBreakerFailures = 3
	defaultBreakerOpen     = 5 * time.Second
	// minFrame is the transport's smallest frame limit.
	minFrame = 512
	// defaultKeepAlive is used only when a server announces a zero
	// keep-alive interval, which a conforming server never does.
	defaultKeepAlive = time.Second
	// eventQueue bounds the events waiting for an event handler.
	eventQueue = 64
	// maxEndpoints bounds the endpoint list, which grows with member
	// addresses learned from the cluster and from leader hints.
	maxEndpoints = 64
)

// defaultOptions returns a fresh configuration with every default; it is a
// function so that no Conn shares mutable state with another.
func defaultOptions() *options {
	return &options{
		keepAliveMisses: defaultKeepAliveMisses,
		backoff: backoff{
			initial: defaultBackoffInitial,
			max:     defaultBackoffMax,
			factor:  defaultBackoffFactor,
			jitter:  defaultBackoffJitter,
		},
		maxAttempts:     defaultMaxAttempts,
		leaderRetry:     defaultLeaderRetry,
		window:          defaultWindow,
		requestTimeout:  defaultRequestTimeout,
		dialTimeout:     defaultDialTimeout,
		maxPending:      defaultMaxPending,
		srBuffer:        defaultSRBuffer,
		noteBuffer:      defaultNoteBuffer,
		logger:          slog.New(slog.DiscardHandler),
		breakerFailures: defaultBreakerFailures,
		breakerOpen:     defaultBreakerOpen,
		limits:          codec.DefaultLimits(),
	}
}

func (o *options) invalid(format string, args ...any) {
	o.errs = append(o.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...))
}

// validate reports the first rejected option value and checks combinations.
func (o *options) validate() error {
	if len(o.errs) > 0 {
		return o.errs[0]
	}
	if o.srHandler != nil && o.srChan != nil {
		return fmt.Errorf("%w: WithServerRequestHandler and WithServerRequests are exclusive", ErrInvalidOption)
	}
	if o.manualAck > 0 && o.srHandler == nil && o.srChan == nil {
		return fmt.Errorf("%w: WithManualAck needs WithServerRequestHandler or WithServerRequests", ErrInvalidOption)
	}
	if o.eventHandler != nil && o.eventChan != nil {
		return fmt.Errorf("%w: WithEventHandler and WithEvents are exclusive", ErrInvalidOption)
	}
	if o.manualAck > 0 {
		o.declareInFlight()
	}
	return nil
}

// capMaxInFlight is the capability by which a session tells the cluster how
// many capability-routed server requests it takes unacknowledged; it is
// fsm.CapMaxInFlight, spelled out here because the client does not import
// fsm.
const capMaxInFlight = "zraft.max_in_flight"

// declareInFlight adds (or replaces) the capMaxInFlight capability with the
// manual-ack limit, keeping the list sorted by name.
func (o *options) declareInFlight() {
	c := codec.Capability{Name: capMaxInFlight, Value: strconv.Itoa(o.manualAck)}
	caps := slices.Clone(o.capabilities)
	i, found := slices.BinarySearchFunc(caps, c.Name, func(x codec.Capability, name string) int { return strings.Compare(x.Name, name) })
	if found {
		caps[i] = c
	} else {
		caps = slices.Insert(caps, i, c)
	}
	o.capabilities = caps
}

// WithCapabilities declares name=value capabilities at session creation; the
// server uses them to pick clients for server-initiated work. They are sent
// sorted by name. Default: none.
func WithCapabilities(caps map[string]string) Option {
	return func(o *options) {
		o.capabilities = o.capabilities[:0]
		for _, name := range slices.Sorted(maps.Keys(caps)) {
			o.capabilities = append(o.capabilities, codec.Capability{Name: name, Value: caps[name]})
		}
	}
}

// WithKeepAliveMisses sets how many consecutive keep-alives may go unanswered
// before the connection is considered dead and the session is continued on
// another member. The interval is the one the server announced when the
// session was created. Default: 3. Must be at least 1.
func WithKeepAliveMisses(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.invalid("keep-alive misses %d < 1", n)
			return
		}
		o.keepAliveMisses = n
	}
}

// WithBackoff sets the exponential backoff used after transport failures
// (cannot connect, the handshake fails, a connection drops without
// answering), after members refuse a session for now (RateLimited,
// TooManySessions), and before resending a command the server refused as
// Overloaded, TooManyInFlight or OutcomeUnknown. Leader hints are followed
// at once and "no leader yet" answers are retried after WithLeaderRetry's
// interval instead: neither grows the backoff. The n-th delay (from 0) is
// min(initial*factor^n, max), varied at random by ±jitter (a fraction) and
// never above max. Default: 100 ms, 30 s, 2, 0.25. initial must be positive,
// max >= initial, factor >= 1 and jitter in [0, 1).
func WithBackoff(initial, max time.Duration, factor, jitter float64) Option {
	return func(o *options) {
		b := backoff{initial: initial, max: max, factor: factor, jitter: jitter}
		if err := b.validate(); err != nil {
			o.errs = append(o.errs, err)
			return
		}
		o.backoff = b
	}
}

// WithMaxAttempts sets how many times a command or query is sent (the first
// send included) before it fails. Sends caused by a reconnection do not count:
// a reconnection resends everything pending without using up attempts.
// Default: 5. Must be at least 1.
func WithMaxAttempts(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.invalid("max attempts %d < 1", n)
			return
		}
		o.maxAttempts = n
	}
}

// WithLeaderRetry sets how soon the client asks the next member after one
// answered that it knows no leader (ClusterUnavailable, or NotLeader or
// ShuttingDown without a hint), varied at random by ±25 %. Members are asked
// in turn, so a new leader is found within about one interval of its
// election. Keep it well below the servers' election timeout. Default:
// 150 ms. Must be positive.
func WithLeaderRetry(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.invalid("leader retry %v <= 0", d)
			return
		}
		o.leaderRetry = d
	}
}

// WithRequestWindow bounds how far request ids may run ahead of the oldest
// pending command: a command whose id is window or more above it waits in
// the Conn, unsent, until older commands complete. The server caches each
// session's answered responses until the client's oldest pending id passes
// them, so the window must be at most the servers' per-session cache
// (max_cached_responses, default 1,024) for the oldest command to always
// have room. Default: 512. Must be at least 1.
func WithRequestWindow(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.invalid("request window %d < 1", n)
			return
		}
		o.window = n
	}
}

// WithRequestTimeout sets how long the client waits for the answer to one
// attempt before resending the command or query with the same id on the
// current connection. Keep it above the servers' proposal timeout
// (proposal_timeout, default 5 s): a server that gives up on a proposal
// answers OutcomeUnknown itself, and a shorter client timeout only makes
// slow commands be proposed twice (harmless, but wasted). Default: 7 s.
// Must be positive.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.invalid("request timeout %v <= 0", d)
			return
		}
		o.requestTimeout = d
	}
}

// WithDialTimeout bounds one connection attempt: the transport handshake plus
// the session handshake (CreateSession or ContinueSession and its answer).
// Default: 5 s. Must be positive.
func WithDialTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			o.invalid("dial timeout %v <= 0", d)
			return
		}
		o.dialTimeout = d
	}
}

// WithMaxPending bounds the commands and queries that are pending at once
// (sent and unanswered, or queued while disconnected). A call made when the
// table is full fails at once with ErrOverloaded without being sent, so it is
// safe to retry. Default: 1024. Must be at least 1.
func WithMaxPending(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.invalid("max pending %d < 1", n)
			return
		}
		o.maxPending = n
	}
}

// WithServerRequestHandler sets a function called with each server-initiated
// request, one at a time, in request-id order, on a goroutine the Conn owns.
// By default the request is acknowledged to the server when it enters the
// delivery buffer (see WithServerRequestBuffer), before h runs; with
// WithManualAck it is acknowledged when h returns (or calls r.Ack). Close
// waits for h to return. Default: none (server requests are acknowledged
// and dropped). Exclusive with WithServerRequests.
func WithServerRequestHandler(h func(ServerRequest)) Option {
	return func(o *options) { o.srHandler = h }
}

// WithServerRequests delivers server-initiated requests to ch in request-id
// order. A slow reader makes the delivery buffer fill up; requests that do
// not fit are not acknowledged, so the server retries them later. Close stops
// delivery; requests acknowledged but not yet delivered are then dropped.
// With WithManualAck the reader must call Ack on each request when done.
// Default: none. Exclusive with WithServerRequestHandler.
func WithServerRequests(ch chan<- ServerRequest) Option {
	return func(o *options) { o.srChan = ch }
}

// WithServerRequestBuffer bounds both the server requests acknowledged and
// waiting for delivery and the requests held back because an earlier id has
// not arrived yet. Requests beyond either bound are dropped unacknowledged
// and the server resends them. Default: 64. Must be at least 1.
func WithServerRequestBuffer(n int) Option {
	return func(o *options) {
		if n < 1 {
			o.invalid("server request buffer %d < 1", n)
			return
		}
		o.srBuffer = n
	}
}

// WithManualAck switches server requests from ack-on-receipt to
// acknowledge-after-processing: a request is acknowledged to the cluster only
// when the handler given to WithServerRequestHandler returns, or when the
// application calls its Ack method (required with WithServerRequests).
// Acknowledgements stay cumulative, so id n is acknowledged once every id up
// to n is done. Until then the request stays in the cluster's replicated
// queue for this session: the cluster resends it after a reconnection (the
// Conn drops copies of requests it is still working on), gives it to another
// capable session if this session ends (ToCapable work) or reports it to the
// application as dropped (ToSession work). Work is therefore at least once:
// a request whose worker dies before acknowledging is processed again
// elsewhere. At most maxInFlight requests are handed out unacknowledged at a
// time; the others wait in the cluster (and up to WithServerRequestBuffer of
// them in the Conn), unacknowledged. The limit is also declared to the
// cluster as the capability zraft.max_in_flight=maxInFlight, so the cluster
// assigns this session at most that many capability-routed requests at a
// time and routes the rest to sessions with room (it must not exceed the
// cluster's max pending server requests per session, default 1,024, or the
// session is refused: Dial fails with ErrMalformed). Default: off (ack on
// receipt: at most once). maxInFlight must be at least 1; needs
// WithServerRequestHandler or WithServerRequests.
func WithManualAck(maxInFlight int) Option {
	return func(o *options) {
		if maxInFlight < 1 {
			o.invalid("manual ack in-flight limit %d < 1", maxInFlight)
			return
		}
		o.manualAck = maxInFlight
	}
}

// WithEventHandler sets a function called with each connection-state event,
// one at a time, on a goroutine the Conn owns. At most 64 events wait for it;
// when it falls further behind, newer events are dropped and logged. Default:
// none. Exclusive with WithEvents.
func WithEventHandler(h func(Event)) Option {
	return func(o *options) { o.eventHandler = h }
}

// WithEvents sends connection-state events to ch without blocking: an event
// that does not fit in ch's buffer is dropped and logged, so give ch a
// buffer. Default: none. Exclusive with WithEventHandler.
func WithEvents(ch chan<- Event) Option {
	return func(o *options) { o.eventChan = ch }
}

// WithTLS encrypts connections with TLS using cfg. Default: nil, plaintext;
// the session secret then travels in clear and anyone who can read the
// traffic can continue the session.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) { o.tls = cfg }
}

// WithLogger sets the logger for connection events and dropped frames.
// Default: a logger that discards everything.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l == nil {
			o.invalid("nil logger")
			return
		}
		o.logger = l
	}
}

// WithBreaker configures the circuit breaker kept for each endpoint: it opens
// after failures consecutive transport failures or timeouts on that endpoint
// (connection refused or lost, unanswered handshakes, keep-alives or
// requests; never "not leader" or application errors) and the endpoint is
// then skipped for openFor, after which one attempt is let through. Default:
// 3 failures, 5 s. failures must be at least 1 and openFor positive.
func WithBreaker(failures uint32, openFor time.Duration) Option {
	return func(o *options) {
		if failures < 1 || openFor <= 0 {
			o.invalid("breaker failures %d, open %v", failures, openFor)
			return
		}
		o.breakerFailures = failures
		o.breakerOpen = openFor
	}
}

// WithLimits sets the codec limits for frames sent and received: a larger
// payload fails with ErrTooLarge before anything is sent, and a larger frame
// from a server ends that connection. Use the limits the cluster's nodes use.
// Default: codec.DefaultLimits() (4 MiB frames, 1 MiB payloads). l must pass
// l.Validate() and MaxFrame must be at least 512.
func WithLimits(l codec.Limits) Option {
	return func(o *options) {
		if err := l.Validate(); err != nil {
			o.invalid("limits: %v", err)
			return
		}
		if l.MaxFrame < minFrame {
			o.invalid("limits: MaxFrame %d < %d", l.MaxFrame, minFrame)
			return
		}
		o.limits = l
	}
}

// QueryOption configures one Query.
type QueryOption func(*queryOptions)

type queryOptions struct {
	consistency codec.Consistency
}

// AllowStale lets the query be answered from the serving node's applied state
// without a ReadIndex round: faster, but it may miss recently committed
// writes. Without it, queries are linearizable. A server that does not serve
// stale reads answers with ErrUnsupported.
func AllowStale() QueryOption {
	return func(q *queryOptions) { q.consistency = codec.Stale }
}
