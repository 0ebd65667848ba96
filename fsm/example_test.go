package fsm_test

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/zraft/zraft/fsm"
)

// jobs is a minimal Application: "submit" hands the payload to one worker
// session (any session that declared role=worker) and counts submissions.
type jobs struct{ submitted uint64 }

func (j *jobs) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	if err := ctx.Emit(fsm.ToCapable(fsm.Capability{Name: "role", Value: "worker"}), cmd); err != nil {
		return nil, &fsm.AppError{Code: 1, Message: "jobs: " + err.Error()}
	}
	j.submitted++
	return binary.BigEndian.AppendUint64(nil, j.submitted), nil
}

func (j *jobs) Query([]byte) ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, j.submitted), nil
}

func (j *jobs) SessionOpened(*fsm.Context, fsm.SessionInfo) error { return nil }

func (j *jobs) SessionClosed(*fsm.Context, fsm.SessionID, fsm.RemoveReason, []fsm.ServerRequest) {}

func (j *jobs) SaveSnapshot(w io.Writer) error {
	_, err := w.Write(binary.BigEndian.AppendUint64(nil, j.submitted))
	return err
}

func (j *jobs) RecoverFromSnapshot(r io.Reader) error {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return err
	}
	j.submitted = binary.BigEndian.Uint64(b[:])
	return nil
}

type printer struct{}

func (printer) ServerRequestAdded(s fsm.SessionID, r fsm.ServerRequest) {
	fmt.Printf("deliver %q to %v as request %d\n", r.Payload, s.String()[30:], r.ID)
}

func (printer) SessionRemoved(s fsm.SessionID, reason fsm.RemoveReason) {
	fmt.Printf("session %v %v\n", s.String()[30:], reason)
}

func Example() {
	m, err := fsm.New(&jobs{}, fsm.DefaultConfig(), printer{})
	if err != nil {
		panic(err)
	}
	apply := func(c fsm.Command) fsm.Outcome {
		r, err := m.Apply(fsm.EncodeCommand(nil, c))
		if err != nil {
			panic(err)
		}
		o, err := fsm.DecodeResult(r)
		if err != nil {
			panic(err)
		}
		return o
	}
	worker, client := fsm.SessionID{15: 0xAA}, fsm.SessionID{15: 0xCC}
	apply(fsm.OpenSession{Time: 1e9, ID: worker, Nonce: 1, Timeout: 10 * time.Second,
		Capabilities: []fsm.Capability{{Name: "role", Value: "worker"}}})
	apply(fsm.OpenSession{Time: 1e9, ID: client, Nonce: 2, Timeout: 10 * time.Second})

	submit := fsm.ClientRequest{Time: 2e9, Session: client, RequestID: 1, LowestPending: 1, Payload: []byte("resize img-7")}
	o := apply(submit)
	fmt.Println(o.Status, binary.BigEndian.Uint64(o.Payload))
	// The client did not hear back and retries: same answer, no second job.
	o = apply(submit)
	fmt.Println(o.Status, binary.BigEndian.Uint64(o.Payload))

	apply(fsm.AckServerRequests{Time: 3e9, Acks: []fsm.Ack{{Session: worker, UpTo: 1}}})
	apply(fsm.CloseSession{Time: 4e9, Session: worker})
	fmt.Println(m.Stats().Sessions, "session left")
	// Output:
	// deliver "resize img-7" to aa as request 1
	// OK 1
	// OK 1
	// session aa closed
	// 1 session left
}
