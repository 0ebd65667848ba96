package transport

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (often
// together with the underlying cause), so callers match them with errors.Is.
var (
	// ErrInvalidConfig is wrapped by Validate (and so by Listen and Dial)
	// when a configuration field is out of range.
	ErrInvalidConfig = errors.New("transport: invalid config")

	// ErrFrameTooLarge means a frame's announced length exceeded the
	// configured MaxFrameSize. When a peer announces it, the connection is
	// closed before any memory is allocated for the frame; when a local
	// caller tries to send it, the frame is refused and the connection kept.
	ErrFrameTooLarge = errors.New("transport: frame too large")

	// ErrProtocol means the peer violated ZMTP 3 framing as this package
	// accepts it (reserved flag bits set, a data frame during the handshake,
	// a command inside a multi-part message, a malformed command, an ERROR
	// command). The connection is closed.
	ErrProtocol = errors.New("transport: protocol violation")

	// ErrHandshake means the TLS or ZMTP handshake did not complete: the peer
	// spoke something else, went away, timed out (the error then also matches
	// os.ErrDeadlineExceeded or context.DeadlineExceeded), or was closed at
	// once because a limit was reached.
	ErrHandshake = errors.New("transport: handshake failed")

	// ErrUnknownConn is returned by Router.Send and Router.CloseConn for an
	// id that is not an open connection: never opened, already closing or
	// closed, or the Router itself is closed.
	ErrUnknownConn = errors.New("transport: unknown connection")

	// ErrQueueFull means a connection's bounded outbound queue had no room.
	// On a Router the connection is closed at once, because a peer that
	// stopped reading must not hold memory; on a client Conn the frame is
	// refused and the connection kept, so the caller decides.
	ErrQueueFull = errors.New("transport: send queue full")

	// ErrSlowConsumer means a Router connection fell behind by more than
	// RouterConfig.SendQueueBytes (or had bytes queued when the node-wide
	// MaxQueuedBytes was reached): the connection is closed, as NATS does
	// with slow consumers. Errors wrapping it also wrap ErrQueueFull.
	ErrSlowConsumer = errors.New("transport: slow consumer")

	// ErrFrameTimeout is the cause passed to Handler.Closed when a peer did
	// not send a frame larger than 4 KiB whole within
	// RouterConfig.FrameReadTimeout of its header (waiting for the reading
	// budget included): the connection is closed, so that slow senders
	// cannot hold the node's MaxReadingBytes.
	ErrFrameTimeout = errors.New("transport: frame read timeout")

	// ErrTooManyConnections means the server refused the connection at a
	// connection or handshake limit (in total or for this source) and said
	// so: it answered the ZMTP greeting with an ERROR command whose reason
	// starts with "TooManyConnections". Dial's error wraps it together with
	// ErrHandshake and carries the reason text.
	ErrTooManyConnections = errors.New("transport: too many connections")

	// ErrClosed means the connection or Router is closed. Errors from a dead
	// client Conn wrap both ErrClosed and the cause (for example io.EOF when
	// the server went away, or ErrFrameTooLarge).
	ErrClosed = errors.New("transport: connection closed")

	// ErrHandlerPanic is the cause passed to Handler.Closed when a Handler
	// method panicked on that connection; the connection is closed and the
	// Router keeps serving everyone else.
	ErrHandlerPanic = errors.New("transport: handler panicked")
)
