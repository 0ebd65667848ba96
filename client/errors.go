package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/zraft/zraft/codec"
)

// Sentinel errors. Every error this package returns matches one of them with
// errors.Is, including errors a server reported with a wire code (see
// ServerError), so that callers can branch on the kind of failure without
// parsing text.
var (
	// ErrClosed is returned by calls made after Close and by calls that
	// were still pending when Close ran. A pending command that had already
	// been sent may or may not have executed.
	ErrClosed = errors.New("client: closed")

	// ErrSessionExpired means the session is gone on the cluster side (it
	// expired or is unknown) or could not be continued. The Conn is unusable
	// afterwards; pending commands fail with it and their outcome is unknown.
	ErrSessionExpired = errors.New("client: session expired")

	// ErrOutcomeUnknown means a command may or may not have executed: an
	// attempt was sent but no definitive answer arrived before the attempts
	// ran out, the caller's context ended, or the server reported that it
	// timed out. The command executed at most once.
	ErrOutcomeUnknown = errors.New("client: outcome unknown")

	// ErrTimeout means attempts went unanswered within the request timeout.
	// When it ends a command it is wrapped together with ErrOutcomeUnknown.
	ErrTimeout = errors.New("client: timeout")

	// ErrOverloaded means a queue was full: the local pending table (the
	// request was not sent) or the server's pipeline (retried by the client
	// until attempts run out). A command failing with ErrOverloaded alone,
	// without ErrOutcomeUnknown, did not execute.
	ErrOverloaded = errors.New("client: overloaded")

	// ErrClusterUnavailable means the cluster has no leader or the leader
	// lost its quorum. The client retries with backoff until attempts run
	// out.
	ErrClusterUnavailable = errors.New("client: cluster unavailable")

	// ErrResponseEvicted means the server already dropped the cached
	// response of this request id. The command executed once and is never
	// executed again; its result is lost.
	ErrResponseEvicted = errors.New("client: response evicted")

	// ErrTooLarge means a payload or another field exceeds a limit.
	ErrTooLarge = errors.New("client: too large")

	// ErrNotLeader means the node is not the leader. The client follows the
	// leader hint itself, so callers normally never see it.
	ErrNotLeader = errors.New("client: not leader")

	// ErrUnsupported means the server does not offer what was asked, for
	// example a stale read.
	ErrUnsupported = errors.New("client: unsupported")

	// ErrRejected means the server refused the session (the application
	// rejected it, or the secret did not match).
	ErrRejected = errors.New("client: rejected")

	// ErrRateLimited means the server limits session creation; the client
	// retries with backoff.
	ErrRateLimited = errors.New("client: rate limited")

	// ErrTooManySessions means the node's session limit is reached; the
	// client retries with backoff on another member.
	ErrTooManySessions = errors.New("client: too many sessions")

	// ErrTooManyConnections means a member refused the connection at one of
	// its connection or handshake limits (in total or for this client's
	// address) and said so; the client tries the other members with
	// backoff. It wraps the transport's error, which names the limit.
	ErrTooManyConnections = errors.New("client: too many connections")

	// ErrQuotaExceeded means the cluster's replicated state is at its byte
	// quota and refused a write (like etcd's NOSPACE): the command did not
	// run. Reads, deletes and other commands that shrink the state still
	// work; retrying the same write fails the same way until space is
	// freed.
	ErrQuotaExceeded = errors.New("client: quota exceeded")

	// ErrTooManyInFlight means the session's cached-response limit on the
	// server is reached; the client retries with backoff.
	ErrTooManyInFlight = errors.New("client: too many requests in flight")

	// ErrShuttingDown means the node is shutting down; the client follows
	// the leader hint.
	ErrShuttingDown = errors.New("client: server shutting down")

	// ErrSessionMoved means the session was continued on another
	// connection.
	ErrSessionMoved = errors.New("client: session moved")

	// ErrMalformed means a frame could not be decoded by its receiver.
	ErrMalformed = errors.New("client: malformed message")

	// ErrInternal means the server broke one of its own invariants.
	ErrInternal = errors.New("client: server internal error")

	// ErrProtocol means the server sent a code or message this client does
	// not understand.
	ErrProtocol = errors.New("client: protocol error")

	// ErrApplication matches every *AppError.
	ErrApplication = errors.New("client: application error")

	// ErrNoEndpoints is returned by Dial when it is given no endpoint.
	ErrNoEndpoints = errors.New("client: no endpoints")

	// ErrInvalidOption is returned by Dial when an option's value is out of
	// range.
	ErrInvalidOption = errors.New("client: invalid option")

	// ErrTLS means a TLS handshake failed for a reason that retrying cannot
	// fix: the server's certificate did not verify (unknown authority,
	// wrong name, expired), or the server refused this client's
	// certificate or its lack of one. Dial returns it at once, wrapping the
	// cause; an established Conn treats it as a failure of that member
	// only.
	ErrTLS = errors.New("client: TLS handshake failed")
)

// AppError is an error the replicated application returned for a command or a
// query. The command did execute (exactly once); only its result is an error.
type AppError struct {
	Code    uint32 // application-defined
	Message string // application-defined, may be empty
}

// Error implements error.
func (e *AppError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("client: application error %d", e.Code)
	}
	return fmt.Sprintf("client: application error %d: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, ErrApplication) true for every *AppError.
func (e *AppError) Is(target error) bool { return target == ErrApplication }

// ServerError is a failure a server reported with a wire code. It unwraps to
// the sentinel for its code (see CodeError), so errors.Is matches it.
type ServerError struct {
	Code    codec.Code
	Message string // free text from the server, may be empty
}

// Error implements error.
func (e *ServerError) Error() string {
	s := CodeError(e.Code).Error()
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Unwrap returns the sentinel for e.Code.
func (e *ServerError) Unwrap() error { return CodeError(e.Code) }

// CodeError maps a wire code to its sentinel. Each code has exactly one
// sentinel; codes this client does not know map to ErrProtocol.
func CodeError(c codec.Code) error {
	switch c {
	case codec.CodeNotLeader:
		return ErrNotLeader
	case codec.CodeClusterUnavailable:
		return ErrClusterUnavailable
	case codec.CodeSessionNotFound, codec.CodeSessionExpired:
		// Both mean the session cannot be used any more.
		return ErrSessionExpired
	case codec.CodeBadSecret, codec.CodeRejected:
		return ErrRejected
	case codec.CodeRateLimited:
		return ErrRateLimited
	case codec.CodeTooManySessions:
		return ErrTooManySessions
	case codec.CodeOverloaded:
		return ErrOverloaded
	case codec.CodeOutcomeUnknown:
		return ErrOutcomeUnknown
	case codec.CodeResponseEvicted:
		return ErrResponseEvicted
	case codec.CodeTooManyInFlight:
		return ErrTooManyInFlight
	case codec.CodeQuotaExceeded:
		return ErrQuotaExceeded
	case codec.CodeTooLarge:
		return ErrTooLarge
	case codec.CodeMalformed:
		return ErrMalformed
	case codec.CodeApplication:
		return ErrApplication
	case codec.CodeShuttingDown:
		return ErrShuttingDown
	case codec.CodeClientClosed:
		return ErrClosed
	case codec.CodeSessionMoved:
		return ErrSessionMoved
	case codec.CodeInternal:
		return ErrInternal
	case codec.CodeUnsupported:
		return ErrUnsupported
	default:
		// CodeUnspecified and codes from a newer protocol version.
		return ErrProtocol
	}
}

// remoteError builds the error a caller sees for a code a server sent.
// CodeApplication becomes an *AppError; everything else a *ServerError.
func remoteError(code codec.Code, appCode uint32, msg string) error {
	if code == codec.CodeApplication {
		return &AppError{Code: appCode, Message: msg}
	}
	return &ServerError{Code: code, Message: msg}
}

// lostError builds the error pending calls fail with when the session is
// lost: it always matches ErrSessionExpired and carries the cause.
func lostError(cause error) error {
	if cause == nil {
		return ErrSessionExpired
	}
	if errors.Is(cause, ErrSessionExpired) {
		return cause
	}
	return fmt.Errorf("%w: %w", ErrSessionExpired, cause)
}

// certError reports whether err is a certificate verification failure on
// either side of a TLS handshake: this client's check of the server's
// certificate, or the server's refusal of this client's certificate (or of
// its lack of one). Such failures are configuration errors, not outages.
func certError(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		op       *net.OpError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return true
	case errors.As(err, &alert):
		// AlertError's text lacks the "tls: " that the alert's own has.
		return certAlerts["tls: "+strings.TrimPrefix(alert.Error(), "tls: ")]
	case errors.As(err, &op) && op.Op == "remote error" && op.Err != nil:
		// crypto/tls reports an alert received over TCP as a net.OpError
		// around an unexported alert type; its text is all there is.
		return certAlerts[op.Err.Error()]
	}
	return false
}

// certAlerts are the texts of the TLS alerts (RFC 8446 §6.2) that refuse a
// certificate.
var certAlerts = map[string]bool{
	"tls: bad certificate":               true,
	"tls: unsupported certificate":       true,
	"tls: revoked certificate":           true,
	"tls: expired certificate":           true,
	"tls: unknown certificate":           true,
	"tls: unknown certificate authority": true,
	"tls: access denied":                 true,
	"tls: certificate required":          true,
}
