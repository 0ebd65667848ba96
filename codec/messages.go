// Package codec is zraft's wire protocol: the message catalogue exchanged
// between clients and nodes, its binary framing, and the limits every decoder
// enforces. It imports only the standard library.
//
// One ZeroMQ frame carries exactly one message:
//
//	signature "ZR" (0x5A 0x52) | version (1 byte) | kind (1 byte) | fields...
//
// Fields are byte-aligned and big-endian; the layout of each message is in
// docs/protocol.md, which is the normative specification.
//
// Append encodes into a caller-owned buffer without allocating; Decode checks
// every length against Limits and against the bytes left before allocating,
// rejects trailing bytes, and never panics. The encoding is canonical: a frame
// Decode accepts re-encodes to the same bytes. Decoded payloads alias the
// frame.
//
// Forward compatibility: every Code and Consistency byte decodes, so codes and
// consistency levels can be added within version 1 (receivers treat unknown
// codes as non-retryable failures and answer unknown consistency levels with
// CodeUnsupported). New kinds may be added within version 1, but a receiver
// that does not know a kind drops the frame (ErrUnknownKind), so senders only
// use new kinds with peers known to support them. Existing messages never
// change layout within a version; adding a field needs a new kind or version.
package codec

import "time"

// Version is the protocol version this package speaks.
const Version byte = 1

// Signature is the two bytes every frame starts with, so that noise on a
// socket is told apart from protocol traffic.
var Signature = [2]byte{'Z', 'R'}

// HeaderLen is the length of the fixed frame header (signature, version, kind).
const HeaderLen = 4

// SessionID identifies a session. Nodes generate it with crypto/rand.
type SessionID [16]byte

// Secret is the random value a client chooses when it creates a session and
// presents again to continue it from another connection.
type Secret [32]byte

// Kind is the one-byte type discriminator of a message. Client-to-server kinds
// are 0x01-0x3F, server-to-client kinds are 0x41-0x7F.
type Kind uint8

// Client-to-server kinds.
const (
	KindCreateSession    Kind = 0x01
	KindContinueSession  Kind = 0x02
	KindKeepAlive        Kind = 0x03
	KindClientRequest    Kind = 0x04
	KindQuery            Kind = 0x05
	KindServerRequestAck Kind = 0x06
	KindCloseSession     Kind = 0x07
)

// Server-to-client kinds.
const (
	KindSessionCreated    Kind = 0x41
	KindSessionContinued  Kind = 0x42
	KindSessionRejected   Kind = 0x43
	KindSessionClosed     Kind = 0x44
	KindKeepAliveResponse Kind = 0x45
	KindClientResponse    Kind = 0x46
	KindRequestError      Kind = 0x47
	KindServerRequest     Kind = 0x48
	KindQueryResponse     Kind = 0x49
	KindQueryError        Kind = 0x4A
	KindNotification      Kind = 0x4B
)

// FromClient reports whether messages of this kind travel client to server.
func (k Kind) FromClient() bool { return k >= 0x01 && k <= 0x3F }

// Code is a reason or error code carried on the wire. One numbering serves
// rejections, closes and request errors so that a client maps each code to
// exactly one sentinel error. Every byte value decodes: a code this version
// does not know is passed through unchanged (see Code.Known), so that a newer
// server can add codes without breaking older clients.
type Code uint8

// Codes. docs/protocol.md states for each whether a client may retry safely;
// Code.Retryable encodes the same table.
const (
	CodeUnspecified        Code = 0  // no reason given
	CodeNotLeader          Code = 1  // this node is not the leader; see the leader hint
	CodeClusterUnavailable Code = 2  // no leader is known or the leader lost its quorum
	CodeSessionNotFound    Code = 3  // unknown session id, or none bound to this connection
	CodeSessionExpired     Code = 4  // the session expired on keep-alive timeout
	CodeBadSecret          Code = 5  // the secret does not match the session's
	CodeRejected           Code = 6  // the application refused the session
	CodeRateLimited        Code = 7  // too many session creations; retry later
	CodeTooManySessions    Code = 8  // the node's session limit is reached
	CodeOverloaded         Code = 9  // queue or proposal pipeline full; safe to retry
	CodeOutcomeUnknown     Code = 10 // timed out; retry with the same request id
	CodeResponseEvicted    Code = 11 // the response was evicted below the watermark; never re-executed
	CodeTooManyInFlight    Code = 12 // the session's cached-response limit is reached
	CodeTooLarge           Code = 13 // a field exceeds a limit
	CodeMalformed          Code = 14 // the frame could not be decoded
	CodeApplication        Code = 15 // the application returned an error (see AppCode, Message)
	CodeShuttingDown       Code = 16 // the node is shutting down; see the leader hint
	CodeClientClosed       Code = 17 // the client closed the session
	CodeSessionMoved       Code = 18 // the session was continued on another connection
	CodeInternal           Code = 19 // a broken invariant on the server
	CodeUnsupported        Code = 20 // the request asks for something this server does not offer
	CodeOutOfOrder         Code = 21 // an earlier request id of the session has not run yet; resend after it
	CodeQuotaExceeded      Code = 22 // the replicated state is at its byte quota; the write did not run
)

// Consistency selects how a query is served. Every byte value decodes, so a
// server can answer an unknown level with QueryError(CodeUnsupported) instead
// of CodeMalformed; see Consistency.Known.
type Consistency uint8

const (
	// Linearizable reads go through Raft's ReadIndex and are never stale.
	Linearizable Consistency = 0
	// Stale reads are answered from the serving node's applied state without
	// a ReadIndex round; they may miss recently committed writes.
	Stale Consistency = 1
)

// LeaderHint tells a client where the leader is. ID 0 means unknown, and then
// ClientAddr must be empty.
type LeaderHint struct {
	ID         uint64
	ClientAddr string
}

// Member is one cluster member as clients see it. In a message, members are
// sorted by ID in strictly ascending order and no ID is 0.
type Member struct {
	ID         uint64
	ClientAddr string
}

// Capability is one name=value pair a client declares at session creation.
// In a message, capabilities are sorted by Name (byte-wise) with no
// duplicates, and no Name is empty; see SortCapabilities.
type Capability struct {
	Name  string
	Value string
}

// Message is implemented by a pointer to every message type in this package
// (*CreateSession, *ClientRequest, ...); Decode returns such pointers, so a
// type switch on a decoded Message names the pointer types. The interface has
// unexported methods so that only this package's types implement it.
type Message interface {
	// Kind is the message's type discriminator on the wire.
	Kind() Kind
	// appendFields appends the message's fields (without the header) to b.
	// It must only be called after check succeeded.
	appendFields(b []byte) []byte
	// decodeFields reads the message's fields from d and returns d.finish().
	// The decoder travels by value so that it stays on Decode's stack
	// instead of escaping to the heap through this interface call.
	decodeFields(d decoder) error
	// check validates the message against lim and returns the encoded length
	// of its fields (without the header). Limits travel by value so that the
	// caller's Limits never escapes to the heap through this interface call.
	check(lim Limits) (int, error)
}

// CreateSession asks the leader to create a session.
type CreateSession struct {
	Nonce        uint64 // client-chosen; a retry with the same nonce and secret returns the same session
	Secret       Secret
	Capabilities []Capability
}

// ContinueSession binds an existing session to this connection.
type ContinueSession struct {
	SessionID SessionID
	Secret    Secret
	Nonce     uint64
}

// KeepAlive proves the client is alive. The server echoes Timestamp.
type KeepAlive struct {
	Timestamp int64  // opaque to the server; typically client Unix nanoseconds
	AckedUpTo uint64 // highest server request id the client has acknowledged
}

// ClientRequest submits a command for exactly-once execution.
type ClientRequest struct {
	RequestID     uint64 // per session, counting up from 1
	LowestPending uint64 // lowest request id whose response the client still awaits
	Payload       []byte
}

// Query is a read-only request.
type Query struct {
	CorrelationID uint64
	Consistency   Consistency
	Payload       []byte
}

// ServerRequestAck acknowledges every server request with id <= RequestID
// (acknowledgements are cumulative).
type ServerRequestAck struct {
	RequestID uint64
}

// CloseSession ends the session at the client's wish.
type CloseSession struct {
	Reason Code
}

// SessionCreated answers CreateSession.
type SessionCreated struct {
	SessionID         SessionID
	Nonce             uint64
	KeepAliveInterval time.Duration // millisecond resolution on the wire
	SessionTimeout    time.Duration // millisecond resolution on the wire
	LeaderID          uint64
	Members           []Member
}

// SessionContinued answers ContinueSession.
type SessionContinued struct {
	Nonce uint64
}

// SessionRejected refuses CreateSession or ContinueSession.
type SessionRejected struct {
	Nonce   uint64
	Reason  Code
	Leader  LeaderHint
	Message string
}

// SessionClosed tells the client its session is over on this connection.
type SessionClosed struct {
	Reason  Code
	Leader  LeaderHint
	Message string
}

// KeepAliveResponse echoes a KeepAlive's timestamp.
type KeepAliveResponse struct {
	Timestamp int64
}

// ClientResponse carries the result of a successfully applied command.
type ClientResponse struct {
	RequestID uint64
	Result    []byte
}

// RequestError reports that a ClientRequest failed. With CodeApplication the
// command ran and the application returned AppCode and Message.
type RequestError struct {
	RequestID uint64
	Reason    Code
	AppCode   uint32
	Message   string
	Leader    LeaderHint
}

// ServerRequest is work the replicated application pushes to the client.
type ServerRequest struct {
	RequestID uint64 // per session, consecutive from 1
	CreatedAt int64  // cluster time, Unix nanoseconds
	Payload   []byte
}

// QueryResponse answers a Query.
type QueryResponse struct {
	CorrelationID uint64
	Result        []byte
}

// QueryError reports that a Query failed.
type QueryError struct {
	CorrelationID uint64
	Reason        Code
	AppCode       uint32
	Message       string
	Leader        LeaderHint
}

// Notification is a leader-only notification the replicated application
// sent to the session (fsm Context.Notify; kv: a watched key changed). It
// is not replicated and not acknowledged: the client answers nothing, and a
// notification can be lost (the node dropped it, the connection fell
// behind, the session moved). Flags bit 0 (NotificationLost) says that
// notifications for this session were dropped by the node before this one;
// such a frame may carry an empty Payload (a marker). Other flag bits must
// be zero.
type Notification struct {
	Flags   uint8
	Payload []byte
}

// NotificationLost is the Notification flag saying that the node dropped
// notifications for the session before this one.
const NotificationLost uint8 = 0x01
