package supervision

import (
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

type countingCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *countingCounter) Inc(kind, directive string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[kind+"/"+directive]++
}

func (c *countingCounter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

type ping struct{ n int }

// echo replies to every ping with the number of pings it has handled since
// its last (re)start, so the test can see a restart reset its local state.
type echo struct{ handled int }

func (e *echo) Receive(c actor.Context) {
	if p, ok := c.Message().(ping); ok {
		e.handled++
		c.Respond(e.handled)
		_ = p
	}
}

func quietSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInjectedPanicRestartsActorAndIsCounted(t *testing.T) {
	sys := quietSystem()
	counter := &countingCounter{n: map[string]int{}}
	stop := Watch(sys, counter)
	defer stop()

	faults := NewFaults()
	faults.PanicOn("echo", 1, func(msg any) bool { p, ok := msg.(ping); return ok && p.n == 2 })

	// The parent carries the strategy; children inherit supervision from it.
	parent := sys.Root.Spawn(Props(actor.PropsFromFunc(func(c actor.Context) {
		if props, ok := c.Message().(*actor.Props); ok {
			pid, err := c.SpawnNamed(props, "echo-1")
			if err != nil {
				panic(err)
			}
			c.Respond(pid)
		}
	}), "node", DefaultLimits(), nil))
	res, err := sys.Root.RequestFuture(parent, Props(actor.PropsFromProducer(func() actor.Actor { return &echo{} }), "echo", DefaultLimits(), faults), time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	child := res.(*actor.PID)

	ask := func(n int) (int, error) {
		r, err := sys.Root.RequestFuture(child, ping{n}, 300*time.Millisecond).Result()
		if err != nil {
			return 0, err
		}
		return r.(int), nil
	}
	if got, err := ask(1); err != nil || got != 1 {
		t.Fatalf("first ping: got %d, %v", got, err)
	}
	// The second ping panics: no reply, and it is not redelivered.
	if _, err := ask(2); err == nil {
		t.Fatal("ping that triggered the fault was answered")
	}
	waitFor(t, "restart to be counted", func() bool { return counter.get("echo/RestartDirective") == 1 })
	// After the restart the actor works again, with fresh local state.
	if got, err := ask(3); err != nil || got != 1 {
		t.Fatalf("ping after restart: got %d, %v (want 1: state rebuilt from scratch)", got, err)
	}
	if faults.Fired("echo") != 1 {
		t.Fatalf("fired = %d, want 1", faults.Fired("echo"))
	}
	sys.Root.Stop(parent)
}

func TestNilFaultsInjectsNothing(t *testing.T) {
	var f *Faults
	if f.Middleware("any") != nil {
		t.Fatal("nil Faults produced middleware")
	}
}

func TestKind(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"node-1/sessions", "sessions"},
		{"node-1/sessions/session-0a1b2c", "session"},
		{"gateway", "gateway"},
		{"", "unknown"},
	} {
		if got := Kind(&actor.PID{Id: tc.id}); got != tc.want {
			t.Errorf("Kind(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Limits{MaxRestarts: 0, Within: time.Second}).Validate(); err == nil {
		t.Fatal("zero restarts accepted")
	}
	if err := (Limits{MaxRestarts: 1}).Validate(); err == nil {
		t.Fatal("zero window accepted")
	}
}
