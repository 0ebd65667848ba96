package kv

import (
	"fmt"

	"github.com/zraft/zraft/fsm"
)

// Error is a kv error with a stable application code. The store returns
// errors that wrap one of the sentinels below; the fsm caches the code and
// the message, and a client turns them back into an error matching the same
// sentinel with ErrorFromCode.
type Error struct {
	code uint32
	text string
}

// Error returns the error text.
func (e *Error) Error() string { return e.text }

// AppCode returns the stable application code carried on the wire.
func (e *Error) AppCode() uint32 { return e.code }

// Sentinel errors. The numbers in parentheses are their application codes,
// which never change.
var (
	// ErrNotFound (1): the key has no value (get, delete, compare-and-set).
	ErrNotFound = &Error{1, "kv: key not found"}
	// ErrMismatch (2): compare-and-set found another value.
	ErrMismatch = &Error{2, "kv: value mismatch"}
	// ErrEmptyKey (3): keys must not be empty.
	ErrEmptyKey = &Error{3, "kv: empty key"}
	// ErrKeyTooLarge (4): the key exceeds Config.MaxKeyBytes.
	ErrKeyTooLarge = &Error{4, "kv: key too large"}
	// ErrValueTooLarge (5): the value exceeds Config.MaxValueBytes.
	ErrValueTooLarge = &Error{5, "kv: value too large"}
	// ErrNotInteger (6): incr found a value that is not a decimal int64.
	ErrNotInteger = &Error{6, "kv: value is not an integer"}
	// ErrOverflow (7): incr would overflow int64.
	ErrOverflow = &Error{7, "kv: integer overflow"}
	// ErrTooManyKeys (8): creating the key would exceed Config.MaxKeys.
	ErrTooManyKeys = &Error{8, "kv: too many keys"}
	// ErrTooManyWatches (9): the session or the key reached its watch limit.
	ErrTooManyWatches = &Error{9, "kv: too many watches"}
	// ErrMalformed (10): the command or query could not be decoded.
	ErrMalformed = &Error{10, "kv: malformed command"}
	// ErrNoSession (11): watch and unwatch need a client session.
	ErrNoSession = &Error{11, "kv: command needs a session"}
	// ErrBusy (12): no longer returned. Watches used to queue their first
	// notification as a server request and answered Busy when the
	// session's queue was full; notifications are leader-only now
	// (docs/kv.md §6). The code stays reserved and decodable.
	ErrBusy = &Error{12, "kv: session notification queue full"}
	// ErrQuotaExceeded (13): the write would grow the store past the
	// cluster's storage quota (fsm.Context.Quota; node config quota_bytes).
	// It matches fsm.ErrQuotaExceeded, so the machine answers it with
	// StatusQuotaExceeded and clients get the protocol's QuotaExceeded
	// (client.ErrQuotaExceeded; Client methods return an error matching
	// this sentinel too). Gets, deletes and writes that do not grow the
	// store still work.
	ErrQuotaExceeded = &Error{13, "kv: storage quota exceeded"}
)

// Is makes ErrQuotaExceeded match fsm.ErrQuotaExceeded.
func (e *Error) Is(target error) bool { return e == ErrQuotaExceeded && target == fsm.ErrQuotaExceeded }

var sentinels = []*Error{
	ErrNotFound, ErrMismatch, ErrEmptyKey, ErrKeyTooLarge, ErrValueTooLarge,
	ErrNotInteger, ErrOverflow, ErrTooManyKeys, ErrTooManyWatches, ErrMalformed,
	ErrNoSession, ErrBusy, ErrQuotaExceeded,
}

// ErrorFromCode rebuilds a kv error received from the server as an
// application error code and message. The result matches the sentinel with
// errors.Is and keeps the server's message. An unknown code gives an error
// that matches no sentinel.
func ErrorFromCode(code uint32, message string) error {
	for _, s := range sentinels {
		if s.code == code {
			if message == "" || message == s.text {
				return s
			}
			return &remoteError{sentinel: s, message: message}
		}
	}
	return fmt.Errorf("kv: application error %d: %s", code, message)
}

type remoteError struct {
	sentinel *Error
	message  string
}

func (e *remoteError) Error() string   { return e.message }
func (e *remoteError) Unwrap() error   { return e.sentinel }
func (e *remoteError) AppCode() uint32 { return e.sentinel.code }

// wrap returns an error matching sentinel with detail appended.
func wrap(sentinel *Error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}
