package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Errors returned by Append, Encode, Decode and PeekHeader. They are wrapped
// with detail (the message kind and field), so match them with errors.Is.
var (
	// ErrBadSignature means the frame does not start with Signature: it is
	// not a zraft frame at all.
	ErrBadSignature = errors.New("codec: bad signature")
	// ErrUnsupportedVersion means the header names a version other than
	// Version.
	ErrUnsupportedVersion = errors.New("codec: unsupported version")
	// ErrUnknownKind means the header's kind byte names no message of this
	// version.
	ErrUnknownKind = errors.New("codec: unknown kind")
	// ErrTruncated means the frame ended before a header or field did.
	ErrTruncated = errors.New("codec: truncated frame")
	// ErrTooLarge means the frame, a string, a payload or a list exceeds
	// the configured Limits.
	ErrTooLarge = errors.New("codec: too large")
	// ErrTrailingBytes means bytes follow the last field of a message.
	ErrTrailingBytes = errors.New("codec: trailing bytes")
	// ErrInvalidField means a field has a value the protocol forbids, such
	// as unsorted capabilities, a zero request id or invalid UTF-8.
	ErrInvalidField = errors.New("codec: invalid field")
	// ErrInvalidLimits is returned by Limits.Validate.
	ErrInvalidLimits = errors.New("codec: invalid limits")
)

// maxFrameLimit is the largest MaxFrame Validate accepts. Keeping frames under
// 1 GiB keeps every length computation far from int overflow, even on 32-bit
// platforms, and is far beyond anything a Raft entry should carry.
const maxFrameLimit = 1 << 30

// Limits bounds what Append produces and Decode accepts. Both sides of a
// connection should use the same limits; a peer that sends more gets an
// error for that one frame (the server answers CodeTooLarge or CodeMalformed
// when it can attribute the frame, otherwise drops it). The zero value is not
// usable: start from DefaultLimits.
type Limits struct {
	// MaxFrame is the largest whole frame (header included) in bytes.
	// Default 4 MiB; at most 1 GiB.
	MaxFrame int
	// MaxPayload is the largest byte-payload field (a command, result or
	// server request) in bytes. Default 1 MiB; at most MaxFrame.
	MaxPayload int
	// MaxCapabilities is the largest number of capabilities in a
	// CreateSession. Default 64; between 0 and 65535.
	MaxCapabilities int
	// MaxString is the largest string field (addresses, capability names and
	// values, error messages) in bytes. Default 256; between 1 and 65535.
	MaxString int
	// MaxMembers is the largest number of members in a SessionCreated.
	// Default 64; between 1 and 65535.
	MaxMembers int
}

// DefaultLimits returns the limits nodes and clients use unless configured
// otherwise.
func DefaultLimits() Limits {
	return Limits{
		MaxFrame:        4 << 20,
		MaxPayload:      1 << 20,
		MaxCapabilities: 64,
		MaxString:       256,
		MaxMembers:      64,
	}
}

// defaultLimits backs a nil *Limits. It is never modified.
var defaultLimits = DefaultLimits()

// Validate reports whether l is usable, with an error wrapping
// ErrInvalidLimits that names the first bad field.
func (l Limits) Validate() error {
	switch {
	case l.MaxFrame < 64 || l.MaxFrame > maxFrameLimit:
		return fmt.Errorf("%w: MaxFrame %d not in [64, %d]", ErrInvalidLimits, l.MaxFrame, maxFrameLimit)
	case l.MaxPayload < 1 || l.MaxPayload > l.MaxFrame:
		return fmt.Errorf("%w: MaxPayload %d not in [1, MaxFrame=%d]", ErrInvalidLimits, l.MaxPayload, l.MaxFrame)
	case l.MaxCapabilities < 0 || l.MaxCapabilities > math.MaxUint16:
		return fmt.Errorf("%w: MaxCapabilities %d not in [0, 65535]", ErrInvalidLimits, l.MaxCapabilities)
	case l.MaxString < 1 || l.MaxString > math.MaxUint16:
		return fmt.Errorf("%w: MaxString %d not in [1, 65535]", ErrInvalidLimits, l.MaxString)
	case l.MaxMembers < 1 || l.MaxMembers > math.MaxUint16:
		return fmt.Errorf("%w: MaxMembers %d not in [1, 65535]", ErrInvalidLimits, l.MaxMembers)
	}
	return nil
}

// Append validates m against lim, then appends its frame (header and fields)
// to dst and returns the extended slice. When dst has enough spare capacity
// Append allocates nothing, so a caller can reuse one buffer for every
// message. On error dst is returned unchanged together with an error wrapping
// ErrTooLarge or ErrInvalidField. A nil lim means DefaultLimits; lim must
// otherwise have passed Validate (invalid limits do not panic, they merely
// reject messages).
func Append(dst []byte, m Message, lim *Limits) ([]byte, error) {
	if m == nil {
		return dst, fmt.Errorf("%w: nil message", ErrInvalidField)
	}
	if lim == nil {
		lim = &defaultLimits
	}
	n, err := m.check(*lim)
	if err != nil {
		return dst, err
	}
	if n > lim.MaxFrame-HeaderLen {
		return dst, fmt.Errorf("%w: %v frame of %d bytes exceeds MaxFrame %d", ErrTooLarge, m.Kind(), HeaderLen+n, lim.MaxFrame)
	}
	dst = slices.Grow(dst, HeaderLen+n)
	dst = append(dst, Signature[0], Signature[1], Version, byte(m.Kind()))
	return m.appendFields(dst), nil
}

// Encode returns m's frame in a new slice, using DefaultLimits.
func Encode(m Message) ([]byte, error) {
	return Append(nil, m, nil)
}

// newMessage is the parser table: indexed by kind, it yields an empty message
// whose decodeFields reads that kind's fields. A nil entry is an unknown kind.
var newMessage = [...]func() Message{
	KindCreateSession:     func() Message { return new(CreateSession) },
	KindContinueSession:   func() Message { return new(ContinueSession) },
	KindKeepAlive:         func() Message { return new(KeepAlive) },
	KindClientRequest:     func() Message { return new(ClientRequest) },
	KindQuery:             func() Message { return new(Query) },
	KindServerRequestAck:  func() Message { return new(ServerRequestAck) },
	KindCloseSession:      func() Message { return new(CloseSession) },
	KindSessionCreated:    func() Message { return new(SessionCreated) },
	KindSessionContinued:  func() Message { return new(SessionContinued) },
	KindSessionRejected:   func() Message { return new(SessionRejected) },
	KindSessionClosed:     func() Message { return new(SessionClosed) },
	KindKeepAliveResponse: func() Message { return new(KeepAliveResponse) },
	KindClientResponse:    func() Message { return new(ClientResponse) },
	KindRequestError:      func() Message { return new(RequestError) },
	KindServerRequest:     func() Message { return new(ServerRequest) },
	KindQueryResponse:     func() Message { return new(QueryResponse) },
	KindQueryError:        func() Message { return new(QueryError) },
	KindNotification:      func() Message { return new(Notification) },
}

// Known reports whether k names a message of this protocol version.
func (k Kind) Known() bool {
	return int(k) < len(newMessage) && newMessage[k] != nil
}

// PeekHeader checks frame's header (signature, version, kind) and returns its
// kind without decoding any field. A server uses it after Decode failed to
// learn whom to answer: it returns the same header errors Decode would
// (ErrTruncated, ErrBadSignature, ErrUnsupportedVersion), and for an unknown
// kind it returns that kind together with ErrUnknownKind. It does not check
// the frame's size.
func PeekHeader(frame []byte) (Kind, error) {
	if len(frame) < HeaderLen {
		return 0, fmt.Errorf("%w: %d-byte frame is shorter than the %d-byte header", ErrTruncated, len(frame), HeaderLen)
	}
	if frame[0] != Signature[0] || frame[1] != Signature[1] {
		return 0, fmt.Errorf("%w: % x", ErrBadSignature, frame[:2])
	}
	if frame[2] != Version {
		return 0, fmt.Errorf("%w: %d (this node speaks %d)", ErrUnsupportedVersion, frame[2], Version)
	}
	k := Kind(frame[3])
	if !k.Known() {
		return k, fmt.Errorf("%w: %v", ErrUnknownKind, k)
	}
	return k, nil
}

// PeekID returns the request id of a ClientRequest or the correlation id of a
// Query whose fields may be malformed, so that a server can answer
// RequestError or QueryError with CodeMalformed or CodeTooLarge to the right
// call. ok is false when the header is invalid, the kind is another one, or
// the frame is too short to hold the id (the id is the first field of both
// kinds).
func PeekID(frame []byte) (id uint64, ok bool) {
	k, err := PeekHeader(frame)
	if err != nil || (k != KindClientRequest && k != KindQuery) || len(frame) < HeaderLen+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(frame[HeaderLen:]), true
}

// PeekNonce returns the nonce of a CreateSession or ContinueSession whose
// fields may be malformed or too large, so that a server can answer
// SessionRejected with CodeMalformed or CodeTooLarge carrying the client's
// nonce. Both kinds have fixed-size fields before the nonce (CreateSession:
// none; ContinueSession: the 16-byte session id and the 32-byte secret). ok
// is false when the header is invalid, the kind is another one, or the frame
// is too short to hold the nonce.
func PeekNonce(frame []byte) (nonce uint64, ok bool) {
	k, err := PeekHeader(frame)
	if err != nil {
		return 0, false
	}
	off := HeaderLen
	switch k {
	case KindCreateSession:
	case KindContinueSession:
		off += len(SessionID{}) + len(Secret{})
	default:
		return 0, false
	}
	if len(frame) < off+8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(frame[off:]), true
}

// Decode parses one frame into a new message (a pointer to the kind's type,
// such as *ClientRequest). A nil lim means DefaultLimits.
//
// Decode checks the frame's size, then the header, then each length against
// lim and against the bytes remaining before allocating anything, rejects
// trailing bytes, and finally validates the fields exactly as Append does, so
// any message Decode accepts re-encodes to the same bytes. It never panics;
// errors wrap one of the package's Err sentinels.
//
// Byte-slice fields of the result (payloads and results) alias frame: the
// caller must not modify frame while it uses them, and must copy them to keep
// them after reusing frame's buffer. Strings and lists are copied. Empty
// payloads and lists decode as nil.
func Decode(frame []byte, lim *Limits) (Message, error) {
	if lim == nil {
		lim = &defaultLimits
	}
	if len(frame) > lim.MaxFrame {
		return nil, fmt.Errorf("%w: %d-byte frame exceeds MaxFrame %d", ErrTooLarge, len(frame), lim.MaxFrame)
	}
	k, err := PeekHeader(frame)
	if err != nil {
		return nil, err
	}
	m := newMessage[k]()
	if err := m.decodeFields(decoder{b: frame[HeaderLen:], lim: *lim, kind: k}); err != nil {
		return nil, err
	}
	if _, err := m.check(*lim); err != nil {
		return nil, err
	}
	return m, nil
}
