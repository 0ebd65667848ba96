package jobqueue_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/zraft/zraft/examples/jobqueue"
	"github.com/zraft/zraft/fsm"
)

// machine drives the application through the real state machine, as every
// replica does, without a cluster.
type machine struct {
	t   *testing.T
	m   *fsm.Machine
	app *jobqueue.App
	now fsm.ClusterTime
}

func newMachine(t *testing.T, cfg jobqueue.Config) *machine {
	app := jobqueue.New(cfg)
	m, err := fsm.New(app, fsm.DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return &machine{t: t, m: m, app: app, now: 1e12}
}

func (x *machine) apply(c fsm.Command) fsm.Outcome {
	x.t.Helper()
	r, err := x.m.Apply(fsm.EncodeCommand(nil, c))
	if err != nil {
		x.t.Fatal(err)
	}
	o, err := fsm.DecodeResult(r)
	if err != nil {
		x.t.Fatal(err)
	}
	return o
}

func (x *machine) stamp() fsm.ClusterTime { x.now = x.now.Add(time.Millisecond); return x.now }

func (x *machine) open(n byte, caps ...fsm.Capability) fsm.SessionID {
	var id fsm.SessionID
	id[15] = n
	o := x.apply(fsm.OpenSession{Time: x.stamp(), ID: id, SecretHash: fsm.SecretHash{n}, Nonce: uint64(n), Capabilities: caps, Timeout: time.Second})
	if o.Status != fsm.StatusSessionOpened {
		x.t.Fatalf("open: %+v", o)
	}
	return id
}

func (x *machine) submit(id uint64) fsm.Outcome {
	return x.apply(fsm.AppCommand{Time: x.stamp(), Payload: jobqueue.EncodeSubmit(id, []byte("body"))})
}

func (x *machine) query(q []byte) []byte {
	x.t.Helper()
	b, err := x.app.Query(q)
	if err != nil {
		x.t.Fatal(err)
	}
	return b
}

func (x *machine) stats() jobqueue.Stats {
	s, err := jobqueue.DecodeStats(x.query(jobqueue.EncodeStatsQuery()))
	if err != nil {
		x.t.Fatal(err)
	}
	return s
}

func (x *machine) status(id uint64) jobqueue.JobStatus {
	s, err := jobqueue.DecodeJobStatus(x.query(jobqueue.EncodeJobQuery(id)))
	if err != nil {
		x.t.Fatal(err)
	}
	return s
}

func TestJobsFollowTheirHolderUntilAcknowledged(t *testing.T) {
	x := newMachine(t, jobqueue.DefaultConfig())
	x.submit(1) // no worker yet: queued in the machine
	if st := x.status(1); st.State != jobqueue.Queued {
		t.Fatalf("job 1 %+v", st)
	}
	a := x.open(1, jobqueue.Worker)
	b := x.open(2, jobqueue.Worker)
	x.submit(2) // fewest unacknowledged: b
	if st := x.status(1); st.State != jobqueue.Held || st.Holder != a || st.Moves != 1 {
		t.Fatalf("job 1 after a opened %+v", st)
	}
	if st := x.status(2); st.State != jobqueue.Held || st.Holder != b {
		t.Fatalf("job 2 %+v", st)
	}
	// A resubmission changes nothing.
	if o := x.submit(2); o.Status != fsm.StatusOK || o.Payload[0] != jobqueue.Held {
		t.Fatalf("resubmit %+v", o)
	}
	// a acknowledges job 1: done by a.
	x.apply(fsm.AckServerRequests{Time: x.stamp(), Acks: []fsm.Ack{{Session: a, UpTo: 1}}})
	if st := x.status(1); st.State != jobqueue.Done || st.Holder != a {
		t.Fatalf("job 1 after ack %+v", st)
	}
	// b expires without acknowledging job 2: it moves to a.
	x.now = x.now.Add(2 * time.Second)
	info, _ := x.m.Session(b)
	if o := x.apply(fsm.ExpireSession{Time: x.stamp(), Session: b, LivenessStamp: info.Liveness}); o.Status != fsm.StatusOK {
		t.Fatalf("expire %+v", o)
	}
	if st := x.status(2); st.State != jobqueue.Held || st.Holder != a || st.Moves != 1 {
		t.Fatalf("job 2 after b expired %+v", st)
	}
	x.apply(fsm.AckServerRequests{Time: x.stamp(), Acks: []fsm.Ack{{Session: a, UpTo: 2}}})
	if s := x.stats(); s != (jobqueue.Stats{Jobs: 2, Done: 2, Workers: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestBadInputAndLimits(t *testing.T) {
	x := newMachine(t, jobqueue.Config{MaxJobs: 1, MaxBody: 8})
	for _, cmd := range [][]byte{nil, {'S'}, {'X', 1}, {'S', 0x80}} {
		o := x.apply(fsm.AppCommand{Time: x.stamp(), Payload: cmd})
		if o.Status != fsm.StatusAppError || o.AppCode != jobqueue.ErrBadCommand.Code {
			t.Errorf("command %x: %+v", cmd, o)
		}
	}
	if o := x.apply(fsm.AppCommand{Time: x.stamp(), Payload: jobqueue.EncodeSubmit(1, make([]byte, 9))}); o.AppCode != jobqueue.ErrTooLarge.Code {
		t.Errorf("large body: %+v", o)
	}
	x.submit(1)
	if o := x.submit(2); o.AppCode != jobqueue.ErrFull.Code {
		t.Errorf("past MaxJobs: %+v", o)
	}
	for _, q := range [][]byte{nil, {'J'}, {'J', 0x80}, {'Q'}} {
		if _, err := x.app.Query(q); err != jobqueue.ErrBadCommand {
			t.Errorf("query %x: %v", q, err)
		}
	}
	if _, err := x.app.Query(jobqueue.EncodeJobQuery(7)); err != jobqueue.ErrNoJob {
		t.Errorf("unknown job: %v", err)
	}
}

func TestSnapshotRoundTripAndDamage(t *testing.T) {
	x := newMachine(t, jobqueue.DefaultConfig())
	a := x.open(1, jobqueue.Worker)
	for id := uint64(1); id <= 5; id++ {
		x.submit(id)
	}
	x.apply(fsm.AckServerRequests{Time: x.stamp(), Acks: []fsm.Ack{{Session: a, UpTo: 2}}})
	var snap bytes.Buffer
	if err := x.app.SaveSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	restored := jobqueue.New(jobqueue.DefaultConfig())
	if err := restored.RecoverFromSnapshot(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := restored.SaveSnapshot(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap.Bytes(), again.Bytes()) {
		t.Fatal("restored state writes another snapshot")
	}
	// Every truncation and a trailing byte are errors, never panics, and
	// leave the state alone.
	for n := 0; n < snap.Len(); n++ {
		if err := restored.RecoverFromSnapshot(bytes.NewReader(snap.Bytes()[:n])); err == nil {
			t.Fatalf("truncated to %d bytes: no error", n)
		}
	}
	if err := restored.RecoverFromSnapshot(bytes.NewReader(append(snap.Bytes(), 0))); err == nil {
		t.Fatal("trailing byte: no error")
	}
	if b, _ := restored.Query(jobqueue.EncodeStatsQuery()); !bytes.Equal(b, x.query(jobqueue.EncodeStatsQuery())) {
		t.Fatal("a failed restore changed the state")
	}
}
