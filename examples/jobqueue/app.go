// Package jobqueue is the replicated job queue of docs/extending.md: an
// fsm.Application that hands each submitted job to one worker session (any
// session that declared the capability role=worker), learns where every job
// is from Context.Place and fsm.MoveObserver, and counts a job done when its
// worker acknowledges it (fsm.AckObserver). Workers (DialWorker) use the
// client's manual acknowledgement, so "acknowledged" means "processed": a job
// whose worker dies before acknowledging moves to another worker and is
// processed again (at least once), and no job is lost.
//
// The package is real code: jobqueue_test.go runs it on a three-member
// cluster with worker processes, kills one with SIGKILL while it holds jobs
// and checks that all jobs complete.
package jobqueue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/zraft/zraft/fsm"
)

// Worker is the capability a worker session declares and the selector jobs
// are emitted to.
var Worker = fsm.Capability{Name: "role", Value: "worker"}

// Job states.
const (
	// Held: queued for a worker session, not yet acknowledged by it.
	Held byte = 1
	// Queued: in the machine's unassigned queue, waiting for a worker with
	// room (no worker session is open, or every one is full).
	Queued byte = 2
	// Waiting: not even the unassigned queue had room; the application
	// keeps it and places it again when an acknowledgement frees room.
	Waiting byte = 3
	// Done: a worker acknowledged it.
	Done byte = 4
)

// Errors, as application errors on the wire (match the code on the client
// with codec/client's AppCode, or errors.Is on the server side).
var (
	// ErrFull means Config.MaxJobs jobs exist; the job was not accepted.
	ErrFull = &fsm.AppError{Code: 1, Message: "jobqueue: too many jobs"}
	// ErrBadCommand means the command or query did not decode.
	ErrBadCommand = &fsm.AppError{Code: 2, Message: "jobqueue: malformed command"}
	// ErrTooLarge means a job body exceeds Config.MaxBody.
	ErrTooLarge = &fsm.AppError{Code: 3, Message: "jobqueue: job body too large"}
	// ErrNoJob means a status query named a job that was never submitted.
	ErrNoJob = &fsm.AppError{Code: 4, Message: "jobqueue: no such job"}
)

// Config bounds the application. Every replica must use the same values.
type Config struct {
	// MaxJobs bounds the jobs remembered, done ones included; a submit past
	// it gets ErrFull. Default 100,000.
	MaxJobs int
	// MaxBody bounds a job's body; a larger one gets ErrTooLarge. Default
	// 64 KiB.
	MaxBody int
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config { return Config{MaxJobs: 100_000, MaxBody: 64 << 10} }

type job struct {
	body   []byte
	state  byte
	holder fsm.SessionID // the session holding it (Held), or that did it (Done)
	moves  uint32        // times it changed hands after the first placement
}

// App is the job queue. Create it with New; one instance per node.
type App struct {
	cfg     Config
	jobs    map[uint64]*job
	waiting []uint64 // Waiting jobs, oldest first
	workers []fsm.SessionID
	done    int
}

// New returns an empty job queue.
func New(cfg Config) *App { return &App{cfg: cfg, jobs: make(map[uint64]*job)} }

var (
	_ fsm.Application  = (*App)(nil)
	_ fsm.AckObserver  = (*App)(nil)
	_ fsm.MoveObserver = (*App)(nil)
)

// Apply runs a submit command (EncodeSubmit). Submitting a job id again
// changes nothing and returns the job's state: the submitter may retry.
func (a *App) Apply(ctx *fsm.Context, cmd []byte) ([]byte, error) {
	id, body, err := decodeSubmit(cmd)
	if err != nil {
		return nil, ErrBadCommand
	}
	if j := a.jobs[id]; j != nil {
		return []byte{j.state}, nil
	}
	if len(body) > a.cfg.MaxBody {
		return nil, ErrTooLarge
	}
	if len(a.jobs) >= a.cfg.MaxJobs {
		return nil, ErrFull
	}
	j := &job{body: slices.Clone(body)}
	a.jobs[id] = j
	if !a.place(ctx, id, j) {
		a.waiting = append(a.waiting, id)
	}
	return []byte{j.state}, nil
}

// place hands a job to the worker with the fewest unacknowledged jobs and
// records where it went. It reports false when even the machine's
// unassigned queue is full; the job is then Waiting and the caller keeps it.
func (a *App) place(ctx *fsm.Context, id uint64, j *job) bool {
	pl, err := ctx.Place(fsm.ToCapable(Worker), EncodeJob(id, j.body))
	switch {
	case err != nil:
		j.state, j.holder = Waiting, fsm.SessionID{}
		return false
	case pl.Queued:
		j.state, j.holder = Queued, fsm.SessionID{}
	default:
		j.state, j.holder = Held, pl.Session
	}
	return true
}

// ServerRequestsAcked implements fsm.AckObserver: an acknowledged job is done.
func (a *App) ServerRequestsAcked(ctx *fsm.Context, session fsm.SessionID, reqs []fsm.ServerRequest) {
	for _, r := range reqs {
		id, _, err := DecodeJob(r.Payload)
		if j := a.jobs[id]; err == nil && j != nil && j.state != Done {
			j.state, j.holder = Done, session
			j.body = nil
			a.done++
		}
	}
	a.retryWaiting(ctx)
}

// ServerRequestMoved implements fsm.MoveObserver: a job changed hands.
func (a *App) ServerRequestMoved(_ *fsm.Context, _ fsm.SessionID, req fsm.ServerRequest, to fsm.Placement) {
	id, _, err := DecodeJob(req.Payload)
	j := a.jobs[id]
	if err != nil || j == nil || j.state == Done {
		return
	}
	j.moves++
	if to.Queued {
		j.state, j.holder = Queued, fsm.SessionID{}
	} else {
		j.state, j.holder = Held, to.Session
	}
}

// retryWaiting places Waiting jobs again, oldest first, until one fails.
func (a *App) retryWaiting(ctx *fsm.Context) {
	for len(a.waiting) > 0 {
		id := a.waiting[0]
		if !a.place(ctx, id, a.jobs[id]) {
			return
		}
		a.waiting = a.waiting[1:]
	}
}

// SessionOpened counts worker sessions. Jobs Queued for lack of a worker are
// given to the new session by the machine right after this returns (and
// reported through ServerRequestMoved).
func (a *App) SessionOpened(_ *fsm.Context, info fsm.SessionInfo) error {
	if info.HasCapability(Worker) {
		i, _ := slices.BinarySearchFunc(a.workers, info.ID, fsm.SessionID.Compare)
		a.workers = slices.Insert(a.workers, i, info.ID)
	}
	return nil
}

// SessionClosed forgets a worker. Its unacknowledged jobs have already moved
// to other workers (ServerRequestMoved); dropped holds only those that fit
// nowhere, which are placed again (or kept Waiting).
func (a *App) SessionClosed(ctx *fsm.Context, id fsm.SessionID, _ fsm.RemoveReason, dropped []fsm.ServerRequest) {
	if i, ok := slices.BinarySearchFunc(a.workers, id, fsm.SessionID.Compare); ok {
		a.workers = slices.Delete(a.workers, i, i+1)
	}
	for _, r := range dropped {
		jid, _, err := DecodeJob(r.Payload)
		if j := a.jobs[jid]; err == nil && j != nil && j.state != Done {
			j.moves++
			if !a.place(ctx, jid, j) {
				a.waiting = append(a.waiting, jid)
			}
		}
	}
}

// Query answers EncodeStatsQuery, EncodeJobQuery and EncodeHoldingQuery.
func (a *App) Query(q []byte) ([]byte, error) {
	if len(q) == 1 && q[0] == 'T' {
		return a.stats().encode(), nil
	}
	if len(q) > 1 && q[0] == 'J' {
		id, n := binary.Uvarint(q[1:])
		if n <= 0 || n != len(q)-1 {
			return nil, ErrBadCommand
		}
		j := a.jobs[id]
		if j == nil {
			return nil, ErrNoJob
		}
		st := JobStatus{State: j.state, Holder: j.holder, Moves: j.moves}
		return st.encode(), nil
	}
	if len(q) == 17 && q[0] == 'H' {
		var s fsm.SessionID
		copy(s[:], q[1:])
		var h Holding
		for id, j := range a.jobs {
			if j.holder != s {
				continue
			}
			switch j.state {
			case Held:
				h.HeldIDs = append(h.HeldIDs, id)
			case Done:
				h.Done++
			}
		}
		slices.Sort(h.HeldIDs)
		h.Held = len(h.HeldIDs)
		return h.encode(), nil
	}
	return nil, ErrBadCommand
}

func (a *App) stats() Stats {
	s := Stats{Jobs: len(a.jobs), Done: a.done, Waiting: len(a.waiting), Workers: len(a.workers)}
	for _, j := range a.jobs {
		switch j.state {
		case Held:
			s.Held++
		case Queued:
			s.Queued++
		}
	}
	return s
}

// snapshotVersion is the first byte of the application's snapshot.
const snapshotVersion = 1

// SaveSnapshot writes jobs in id order, then the Waiting list and the worker
// sessions in their (deterministic) order.
func (a *App) SaveSnapshot(w io.Writer) error {
	ids := make([]uint64, 0, len(a.jobs))
	for id := range a.jobs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b := []byte{snapshotVersion}
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		j := a.jobs[id]
		b = binary.AppendUvarint(b, id)
		b = append(b, j.state)
		b = append(b, j.holder[:]...)
		b = binary.AppendUvarint(b, uint64(j.moves))
		b = binary.AppendUvarint(b, uint64(len(j.body)))
		b = append(b, j.body...)
	}
	b = binary.AppendUvarint(b, uint64(len(a.waiting)))
	for _, id := range a.waiting {
		b = binary.AppendUvarint(b, id)
	}
	b = binary.AppendUvarint(b, uint64(len(a.workers)))
	for _, s := range a.workers {
		b = append(b, s[:]...)
	}
	_, err := w.Write(b)
	return err
}

// RecoverFromSnapshot replaces the state with what SaveSnapshot wrote.
func (a *App) RecoverFromSnapshot(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	d := decoder{b: data}
	if v := d.byte(); v != snapshotVersion {
		return fmt.Errorf("jobqueue: snapshot version %d unknown", v)
	}
	fresh := New(a.cfg)
	for n := d.count(); n > 0 && d.err == nil; n-- {
		id := d.uvarint()
		j := &job{state: d.byte()}
		d.fixed(j.holder[:])
		j.moves = uint32(d.uvarint())
		j.body = slices.Clone(d.bytes())
		fresh.jobs[id] = j
		if j.state == Done {
			fresh.done++
		}
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		fresh.waiting = append(fresh.waiting, d.uvarint())
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		var s fsm.SessionID
		d.fixed(s[:])
		fresh.workers = append(fresh.workers, s)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return fmt.Errorf("jobqueue: restore snapshot: %w", d.err)
	}
	*a = *fresh
	return nil
}
