package jobqueue

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/zraft/zraft/fsm"
)

// ErrMalformed is returned by the decoders for bytes they cannot read.
var ErrMalformed = errors.New("jobqueue: malformed encoding")

// EncodeSubmit encodes the command that submits job id with body. The
// submitter chooses ids (unique per job); a resubmitted id is ignored.
func EncodeSubmit(id uint64, body []byte) []byte {
	b := binary.AppendUvarint([]byte{'S'}, id)
	return append(b, body...)
}

func decodeSubmit(cmd []byte) (uint64, []byte, error) {
	if len(cmd) < 2 || cmd[0] != 'S' {
		return 0, nil, ErrMalformed
	}
	id, n := binary.Uvarint(cmd[1:])
	if n <= 0 {
		return 0, nil, ErrMalformed
	}
	return id, cmd[1+n:], nil
}

// EncodeJob encodes the server request a worker receives: the job id, then
// the body. The id inside the payload is what lets the application recognise
// a job wherever it moves (its server-request id changes when it does).
func EncodeJob(id uint64, body []byte) []byte {
	return append(binary.AppendUvarint(nil, id), body...)
}

// DecodeJob decodes a server request's payload. body aliases payload.
func DecodeJob(payload []byte) (id uint64, body []byte, err error) {
	id, n := binary.Uvarint(payload)
	if n <= 0 {
		return 0, nil, ErrMalformed
	}
	return id, payload[n:], nil
}

// EncodeStatsQuery encodes the query answered with Stats (DecodeStats).
func EncodeStatsQuery() []byte { return []byte{'T'} }

// EncodeJobQuery encodes the query answered with one job's JobStatus
// (DecodeJobStatus), or ErrNoJob.
func EncodeJobQuery(id uint64) []byte { return binary.AppendUvarint([]byte{'J'}, id) }

// EncodeHoldingQuery encodes the query answered with the Holding of one
// session (DecodeHolding).
func EncodeHoldingQuery(s fsm.SessionID) []byte { return append([]byte{'H'}, s[:]...) }

// Holding counts the jobs one session holds unacknowledged (Held, whose ids
// HeldIDs lists in order) and the jobs it acknowledged (Done).
type Holding struct {
	Held, Done int
	HeldIDs    []uint64
}

func (h Holding) encode() []byte {
	b := binary.AppendUvarint(nil, uint64(h.Done))
	b = binary.AppendUvarint(b, uint64(len(h.HeldIDs)))
	for _, id := range h.HeldIDs {
		b = binary.AppendUvarint(b, id)
	}
	return b
}

// DecodeHolding decodes a holding query's result.
func DecodeHolding(b []byte) (Holding, error) {
	d := decoder{b: b}
	h := Holding{Done: int(d.uvarint())}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		h.HeldIDs = append(h.HeldIDs, d.uvarint())
	}
	h.Held = len(h.HeldIDs)
	if d.err != nil || len(d.b) != 0 {
		return Holding{}, fmt.Errorf("%w: holding", ErrMalformed)
	}
	return h, nil
}

// Stats counts the queue's jobs by state and its live worker sessions.
type Stats struct {
	Jobs, Done, Held, Queued, Waiting, Workers int
}

func (s Stats) encode() []byte {
	var b []byte
	for _, v := range []int{s.Jobs, s.Done, s.Held, s.Queued, s.Waiting, s.Workers} {
		b = binary.AppendUvarint(b, uint64(v))
	}
	return b
}

// DecodeStats decodes a stats query's result.
func DecodeStats(b []byte) (Stats, error) {
	d := decoder{b: b}
	var s Stats
	for _, p := range []*int{&s.Jobs, &s.Done, &s.Held, &s.Queued, &s.Waiting, &s.Workers} {
		*p = int(d.uvarint())
	}
	if d.err != nil || len(d.b) != 0 {
		return Stats{}, fmt.Errorf("%w: stats", ErrMalformed)
	}
	return s, nil
}

// JobStatus is one job's state: Held (by Holder), Queued, Waiting or Done (by
// Holder, the session that acknowledged it), and how often it changed hands.
type JobStatus struct {
	State  byte
	Holder fsm.SessionID
	Moves  uint32
}

func (s JobStatus) encode() []byte {
	b := append([]byte{s.State}, s.Holder[:]...)
	return binary.AppendUvarint(b, uint64(s.Moves))
}

// DecodeJobStatus decodes a job query's result.
func DecodeJobStatus(b []byte) (JobStatus, error) {
	d := decoder{b: b}
	s := JobStatus{State: d.byte()}
	d.fixed(s.Holder[:])
	s.Moves = uint32(d.uvarint())
	if d.err != nil || len(d.b) != 0 {
		return JobStatus{}, fmt.Errorf("%w: job status", ErrMalformed)
	}
	return s, nil
}

// decoder reads the encodings above, remembering the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrMalformed
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length that cannot exceed the bytes left.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) fixed(dst []byte) {
	if len(d.b) < len(dst) {
		d.fail()
		return
	}
	copy(dst, d.b)
	d.b = d.b[len(dst):]
}

func (d *decoder) bytes() []byte {
	n := d.count()
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
