package actors

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// TestSchedulerRunsEveryActivationAndCloses: actors on a Scheduler get every
// message in order, more activations than resident goroutines still run,
// and Close leaves no goroutine behind (goleak checks in TestMain).
func TestSchedulerRunsEveryActivationAndCloses(t *testing.T) {
	sched := NewScheduler(2, 10)
	sys := quietSystem()
	defer sys.Shutdown()
	const actorsN, msgs = 8, 500
	var got [actorsN][]int
	var wg sync.WaitGroup
	wg.Add(actorsN * msgs)
	pids := make([]*actor.PID, actorsN)
	for i := range pids {
		props := actor.PropsFromFunc(func(c actor.Context) {
			if n, ok := c.Message().(int); ok {
				got[i] = append(got[i], n)
				wg.Done()
			}
		}, actor.WithDispatcher(sched))
		pids[i] = sys.Root.Spawn(props)
	}
	for n := range msgs {
		for _, p := range pids {
			sys.Root.Send(p, n)
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("not every message was handled")
	}
	for i := range pids {
		for n, v := range got[i] {
			if v != n {
				t.Fatalf("actor %d: message %d is %d (out of order)", i, n, v)
			}
		}
		_ = sys.Root.StopFuture(pids[i]).Wait()
	}
	sched.Close()
	// After Close an activation still runs (on a goroutine of its own).
	var ran atomic.Bool
	ranDone := make(chan struct{})
	sched.Schedule(func() { ran.Store(true); close(ranDone) })
	<-ranDone
	if !ran.Load() {
		t.Fatal("activation after Close did not run")
	}
}
