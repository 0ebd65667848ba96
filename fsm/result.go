package fsm

import (
	"encoding/binary"
	"fmt"
)

// Result is what applying one command returns. It mirrors dragonboat's
// statemachine.Result (the adapter copies the two fields) so that this
// package does not link dragonboat. Value is a Status; the layout of Data
// depends only on Value (see DecodeResult). Data may be shared with the
// response cache: receivers must not modify it.
type Result struct {
	Value uint64
	Data  []byte
}

// Status is the outcome class of a command, carried in Result.Value. The
// numbers are stable: they are stored in the response cache, in snapshots and
// in logs of proposers, so they are never renumbered or reused.
type Status uint64

// Statuses.
const (
	// StatusOK: the command was applied. Data is the application's result for
	// ClientRequest and AppCommand, empty otherwise.
	StatusOK Status = 0
	// StatusSessionOpened: a new session was created. Data is its 16-byte id.
	StatusSessionOpened Status = 1
	// StatusSessionExisting: an OpenSession retry matched a live session by
	// nonce and secret hash. Data is that session's 16-byte id.
	StatusSessionExisting Status = 2
	// StatusAppError: the application ran and returned an error. Data is a
	// 4-byte big-endian application code followed by the message.
	StatusAppError Status = 3
	// StatusSessionNotFound: the session is unknown; nothing was executed.
	StatusSessionNotFound Status = 4
	// StatusSessionExpired: the session expired; nothing was executed.
	StatusSessionExpired Status = 5
	// StatusSessionClosed: the session was closed; nothing was executed.
	StatusSessionClosed Status = 6
	// StatusResponseEvicted: the request id is below the watermark and its
	// response was evicted; it is never executed again.
	StatusResponseEvicted Status = 7
	// StatusTooManyInFlight: the session's response cache is full; nothing
	// was executed and the request may be retried with the same id once the
	// client raises its lowest pending id.
	StatusTooManyInFlight Status = 8
	// StatusSessionRejected: the application refused the session. Data is
	// the reason, shown to the client.
	StatusSessionRejected Status = 9
	// StatusTooManySessions: Config.MaxSessions is reached.
	StatusTooManySessions Status = 10
	// StatusInvalid: the command broke a rule or a limit, or its body did not
	// decode. Data is a message. Nothing changed.
	StatusInvalid Status = 11
	// StatusStale: an expiry lost to a newer liveness record. Nothing changed.
	StatusStale Status = 12
	// StatusNotDue: an expiry came before the session's timeout elapsed in
	// cluster time. Nothing changed. No longer produced: the leader's local
	// clock decides when a session is due (docs/fsm.md, "Expiry"); the
	// number stays reserved and decodable.
	StatusNotDue Status = 13
	// StatusResultTooLarge: the command ran (its state changes stand) but its
	// result exceeded Config.MaxResultBytes. Data is empty.
	StatusResultTooLarge Status = 14
	// StatusSessionExists: a new session's id collides with a live session.
	StatusSessionExists Status = 15
	// StatusBatch: a Batch was applied. Data lists each request's result in
	// order; see DecodeBatchResult.
	StatusBatch Status = 16
	// StatusOutOfOrder: the request id is above the next id the session may
	// run (an earlier id of the session has not run yet). Nothing ran; the
	// watermark may have risen from the request's lowest pending id. Resend
	// the same id after the earlier ones.
	StatusOutOfOrder Status = 17
	// StatusQuotaExceeded: the application refused a command that would
	// grow the replicated state past Config.QuotaBytes (it returned an
	// error matching ErrQuotaExceeded). Data is the message. The command's
	// state changes made before the refusal stand (an application refuses
	// before changing anything).
	StatusQuotaExceeded Status = 18
)

// String returns the status name.
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "OK"
	case StatusSessionOpened:
		return "SessionOpened"
	case StatusSessionExisting:
		return "SessionExisting"
	case StatusAppError:
		return "AppError"
	case StatusSessionNotFound:
		return "SessionNotFound"
	case StatusSessionExpired:
		return "SessionExpired"
	case StatusSessionClosed:
		return "SessionClosed"
	case StatusResponseEvicted:
		return "ResponseEvicted"
	case StatusTooManyInFlight:
		return "TooManyInFlight"
	case StatusSessionRejected:
		return "SessionRejected"
	case StatusTooManySessions:
		return "TooManySessions"
	case StatusInvalid:
		return "Invalid"
	case StatusStale:
		return "Stale"
	case StatusNotDue:
		return "NotDue"
	case StatusResultTooLarge:
		return "ResultTooLarge"
	case StatusSessionExists:
		return "SessionExists"
	case StatusBatch:
		return "Batch"
	case StatusOutOfOrder:
		return "OutOfOrder"
	case StatusQuotaExceeded:
		return "QuotaExceeded"
	default:
		return fmt.Sprintf("Status(%d)", uint64(s))
	}
}

// Outcome is a decoded Result.
type Outcome struct {
	Status Status
	// Payload is the application result for StatusOK (aliases Result.Data).
	Payload []byte
	// Session is set for StatusSessionOpened and StatusSessionExisting.
	Session SessionID
	// AppCode is set for StatusAppError.
	AppCode uint32
	// Message is the application error message (StatusAppError), the
	// rejection reason (StatusSessionRejected) or the explanation
	// (StatusInvalid).
	Message string
}

// DecodeResult decodes a Result returned by applying a command (through
// dragonboat, copy sm.Result's Value and Data). It returns ErrMalformed for
// an unknown status or a Data layout that does not match it.
func DecodeResult(r Result) (Outcome, error) {
	o := Outcome{Status: Status(r.Value)}
	switch o.Status {
	case StatusOK, StatusBatch:
		o.Payload = r.Data
	case StatusSessionOpened, StatusSessionExisting:
		if len(r.Data) != len(o.Session) {
			return Outcome{}, fmt.Errorf("%w: %v result of %d bytes", ErrMalformed, o.Status, len(r.Data))
		}
		copy(o.Session[:], r.Data)
	case StatusAppError:
		if len(r.Data) < 4 {
			return Outcome{}, fmt.Errorf("%w: application error result of %d bytes", ErrMalformed, len(r.Data))
		}
		o.AppCode = binary.BigEndian.Uint32(r.Data)
		o.Message = string(r.Data[4:])
	case StatusSessionRejected, StatusInvalid, StatusQuotaExceeded:
		o.Message = string(r.Data)
	case StatusSessionNotFound, StatusSessionExpired, StatusSessionClosed, StatusResponseEvicted,
		StatusTooManyInFlight, StatusTooManySessions, StatusStale, StatusNotDue,
		StatusResultTooLarge, StatusSessionExists, StatusOutOfOrder:
		if len(r.Data) != 0 {
			return Outcome{}, fmt.Errorf("%w: %v result carries %d bytes", ErrMalformed, o.Status, len(r.Data))
		}
	default:
		return Outcome{}, fmt.Errorf("%w: unknown result status %d", ErrMalformed, r.Value)
	}
	return o, nil
}

// Err returns nil for StatusOK, StatusSessionOpened and
// StatusSessionExisting, an *AppError (matching ErrApplication) for
// StatusAppError, and the matching sentinel error otherwise.
func (o Outcome) Err() error {
	switch o.Status {
	case StatusOK, StatusSessionOpened, StatusSessionExisting, StatusBatch:
		return nil
	case StatusAppError:
		return &AppError{Code: o.AppCode, Message: o.Message}
	case StatusSessionNotFound:
		return ErrSessionNotFound
	case StatusSessionExpired:
		return ErrSessionExpired
	case StatusSessionClosed:
		return ErrSessionClosed
	case StatusResponseEvicted:
		return ErrResponseEvicted
	case StatusTooManyInFlight:
		return ErrTooManyInFlight
	case StatusSessionRejected:
		return fmt.Errorf("%w: %s", ErrSessionRejected, o.Message)
	case StatusTooManySessions:
		return ErrTooManySessions
	case StatusInvalid:
		return fmt.Errorf("%w: %s", ErrInvalid, o.Message)
	case StatusStale:
		return ErrStale
	case StatusNotDue:
		return ErrNotDue
	case StatusResultTooLarge:
		return ErrResultTooLarge
	case StatusSessionExists:
		return ErrSessionExists
	case StatusOutOfOrder:
		return ErrOutOfOrder
	case StatusQuotaExceeded:
		return fmt.Errorf("%w: %s", ErrQuotaExceeded, o.Message)
	default:
		return fmt.Errorf("%w: unknown result status %d", ErrMalformed, uint64(o.Status))
	}
}

// DecodeBatchResult splits the result of a Batch into its requests'
// results, in order: each a uvarint status and a length-prefixed data. It
// returns ErrMalformed when r is not a well-formed StatusBatch result.
func DecodeBatchResult(r Result) ([]Result, error) {
	if Status(r.Value) != StatusBatch {
		return nil, fmt.Errorf("%w: %v is not a batch result", ErrMalformed, Status(r.Value))
	}
	rd := reader{b: r.Data}
	var out []Result
	for len(rd.b) > 0 && rd.err == nil {
		v := rd.uvarint()
		d := rd.bytes(len(rd.b))
		out = append(out, Result{Value: v, Data: d})
	}
	if rd.err != nil {
		return nil, fmt.Errorf("%w: batch result: %v", ErrMalformed, rd.err)
	}
	return out, nil
}

func statusResult(s Status) Result { return Result{Value: uint64(s)} }

func messageResult(s Status, msg string) Result {
	return Result{Value: uint64(s), Data: []byte(msg)}
}

func appErrorResult(code uint32, msg string) Result {
	d := make([]byte, 4, 4+len(msg))
	binary.BigEndian.PutUint32(d, code)
	return Result{Value: uint64(StatusAppError), Data: append(d, msg...)}
}

func sessionResult(s Status, id SessionID) Result {
	return Result{Value: uint64(s), Data: append([]byte(nil), id[:]...)}
}
