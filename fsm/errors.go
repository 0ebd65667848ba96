package fsm

import (
	"errors"
	"fmt"
)

// Errors returned by the machine, by command decoding, by Context.Emit and by
// Outcome.Err. Each is matchable with errors.Is.
var (
	// ErrUnknownVersion means a log entry or snapshot was written by a newer
	// version of zraft than this binary understands. The node must stop: the
	// entry cannot be skipped without diverging from the other replicas, and
	// upgrading the binary fixes it.
	ErrUnknownVersion = errors.New("fsm: unknown encoding version")
	// ErrMalformed means bytes in a known version could not be decoded.
	ErrMalformed = errors.New("fsm: malformed encoding")
	// ErrSessionNotFound means the session id names no live session.
	ErrSessionNotFound = errors.New("fsm: session not found")
	// ErrSessionExpired means the session expired on keep-alive timeout.
	ErrSessionExpired = errors.New("fsm: session expired")
	// ErrSessionClosed means the session was closed explicitly.
	ErrSessionClosed = errors.New("fsm: session closed")
	// ErrSessionExists means a new session's id collides with a live one.
	ErrSessionExists = errors.New("fsm: session id already in use")
	// ErrResponseEvicted means the request id is below the session's
	// watermark and its response is no longer cached. The command is never
	// executed again.
	ErrResponseEvicted = errors.New("fsm: response evicted")
	// ErrTooManyInFlight means the session already caches
	// Config.MaxCachedResponses responses; nothing was executed.
	ErrTooManyInFlight = errors.New("fsm: too many requests in flight")
	// ErrOutOfOrder means the request id is above the next id its session
	// may run: an earlier id has not run yet. Nothing was executed; the same
	// id may be sent again once the earlier ones have run.
	ErrOutOfOrder = errors.New("fsm: request out of order")
	// ErrTooManySessions means Config.MaxSessions sessions are live.
	ErrTooManySessions = errors.New("fsm: too many sessions")
	// ErrSessionRejected means the Application refused to open the session.
	ErrSessionRejected = errors.New("fsm: session rejected by the application")
	// ErrInvalid means a command was well-formed but violates a rule or a
	// limit (for example unsorted capabilities or a timeout out of range).
	// Nothing was changed.
	ErrInvalid = errors.New("fsm: invalid command")
	// ErrStale means an expiry was not applied because a newer liveness
	// record arrived after the leader's decision.
	ErrStale = errors.New("fsm: expiry superseded by newer liveness")
	// ErrNotDue means an expiry was not applied because, by cluster time, the
	// session's timeout had not elapsed since its recorded liveness. The
	// machine no longer refuses expiries this way (the leader's clock
	// decides, see docs/fsm.md); the error stays for StatusNotDue results.
	ErrNotDue = errors.New("fsm: session not due for expiry")
	// ErrResultTooLarge means the command ran and its state changes stand,
	// but its result exceeded Config.MaxResultBytes and was replaced.
	ErrResultTooLarge = errors.New("fsm: result too large")
	// ErrQuotaExceeded means a command would have grown the replicated
	// state past Config.QuotaBytes and was refused. An Application returns
	// an error matching it (errors.Is) from Apply to refuse a write past
	// Context.Quota; the result is StatusQuotaExceeded, which clients see
	// as their own QuotaExceeded error. Reads, deletes and session traffic
	// are not affected.
	ErrQuotaExceeded = errors.New("fsm: storage quota exceeded")
	// ErrQueueFull is returned by Context.Emit when the target session's
	// pending server requests (or, for a selector, the unassigned queue)
	// reached their bound. Nothing was queued.
	ErrQueueFull = errors.New("fsm: server request queue full")
	// ErrPayloadTooLarge is returned by Context.Emit when the payload exceeds
	// Config.MaxServerRequestBytes.
	ErrPayloadTooLarge = errors.New("fsm: server request payload too large")
	// ErrUnknownQuery is returned by Machine.Lookup for a query value of a
	// type it does not know.
	ErrUnknownQuery = errors.New("fsm: unknown query type")
	// ErrApplication wraps every application error decoded from a result, so
	// that callers can tell "the command ran and failed" apart from framework
	// rejections. Use errors.As with *AppError for the code.
	ErrApplication = errors.New("fsm: application error")
)

// AppError is an application-defined error with a stable numeric code that
// travels to the client unchanged. An Application returns one (or any error
// with an AppCode() uint32 method) from Apply or Query; the machine caches the
// code and message like any result.
type AppError struct {
	Code    uint32
	Message string
}

// Error returns the message.
func (e *AppError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("fsm: application error %d", e.Code)
	}
	return e.Message
}

// AppCode returns the application error code.
func (e *AppError) AppCode() uint32 { return e.Code }

// Is makes every *AppError match ErrApplication.
func (e *AppError) Is(target error) bool { return target == ErrApplication }

// AppCoder is implemented by errors that carry an application error code.
// The machine uses it to turn an Application's error into a cached result;
// errors without it are recorded with code 0.
type AppCoder interface {
	error
	AppCode() uint32
}

// appErrorOf converts an application error into a code and message.
func appErrorOf(err error) (uint32, string) {
	var c AppCoder
	if errors.As(err, &c) {
		return c.AppCode(), err.Error()
	}
	return 0, err.Error()
}
