// Package supervision holds the policy of zraft's actor tree: which failures
// restart an actor and how often, how restarts are counted, and a
// fault-injection hook that tests use to crash a chosen actor kind.
//
// The tree's shape (see docs/architecture.md):
//
//	node (root, spawned by node.Start)
//	├── gateway      transport frames in, encoded replies out
//	├── sessions     directory: connection ↔ session, leader gating
//	│   └── session  one per live session
//	├── keepalive    leader-local liveness, liveness batches and expiries
//	├── raft         bridge to dragonboat
//	├── dispatcher   server-initiated requests and acknowledgement batches
//	└── user actors  added through node options
//
// Every actor is spawned with Strategy: a panic restarts the actor that
// panicked (one-for-one), at most Limits.MaxRestarts times per Limits.Within;
// past that the actor is stopped and its supervisor is told. The node's root
// then starts a stopped top-level actor afresh (logged, and counted with
// directive "Respawned"); the directory forgets a stopped session actor and
// tells its client, which continues its session on a fresh one.
// Restarting is always safe because nothing an actor keeps locally is the only
// copy of anything acknowledged: that state lives in the replicated state
// machine, and the rest is rebuilt from it, from the directory, or from the
// client's retry.
package supervision

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Limits bounds how often an actor may be restarted.
type Limits struct {
	// MaxRestarts is how many restarts are allowed within Within before the
	// actor is stopped instead. Default 10.
	MaxRestarts int
	// Within is the sliding window for MaxRestarts. Default 10 s.
	Within time.Duration
}

// DefaultLimits returns the limits used when a node's config sets none.
func DefaultLimits() Limits {
	return Limits{MaxRestarts: 10, Within: 10 * time.Second}
}

// Validate reports whether the limits are usable.
func (l Limits) Validate() error {
	if l.MaxRestarts < 1 {
		return fmt.Errorf("supervision: MaxRestarts must be at least 1, got %d", l.MaxRestarts)
	}
	if l.Within <= 0 {
		return fmt.Errorf("supervision: Within must be positive, got %v", l.Within)
	}
	return nil
}

// Strategy returns the one-for-one restart strategy with the given limits.
// Every panic is treated the same way: the failing actor alone restarts,
// because actors in zraft do not share state that a sibling's restart would
// need to reset.
func Strategy(l Limits) actor.SupervisorStrategy {
	return actor.NewOneForOneStrategy(l.MaxRestarts, l.Within, func(reason any) actor.Directive {
		return actor.RestartDirective
	})
}

// StrategyDropping is Strategy, calling dropped with the failed child and
// the message whose handling panicked before the failure is handled:
// protoactor does not deliver that message again, so whoever counted it
// (an admission budget) is told it is gone. dropped gets the message
// unwrapped from its envelope and must not block.
func StrategyDropping(l Limits, dropped func(child *actor.PID, msg any)) actor.SupervisorStrategy {
	return droppingStrategy{SupervisorStrategy: Strategy(l), dropped: dropped}
}

type droppingStrategy struct {
	actor.SupervisorStrategy
	dropped func(child *actor.PID, msg any)
}

func (s droppingStrategy) HandleFailure(system *actor.ActorSystem, sup actor.Supervisor, child *actor.PID,
	rs *actor.RestartStatistics, reason any, message any) {
	if message != nil {
		s.dropped(child, actor.UnwrapEnvelopeMessage(message))
	}
	s.SupervisorStrategy.HandleFailure(system, sup, child, rs, reason, message)
}

// Kind returns the actor kind of a PID, the first path element of its id
// after the node's own prefix: "node-1/sessions/s-0a1b…" has kind "sessions"
// for the directory and "session" for a session actor, because session actors
// are named "session-<id>".
func Kind(pid *actor.PID) string {
	if pid == nil {
		return "unknown"
	}
	id := pid.Id
	if i := strings.LastIndexByte(id, '/'); i >= 0 {
		id = id[i+1:]
	}
	if i := strings.IndexByte(id, '-'); i >= 0 {
		id = id[:i]
	}
	if id == "" {
		return "unknown"
	}
	return id
}

// Counter receives one call per supervisor decision. The node implements it
// with a Prometheus counter vector labelled by actor kind and directive.
type Counter interface {
	Inc(kind, directive string)
}

// Watch subscribes to the actor system's supervision events and reports each
// one to c. It returns a function that unsubscribes.
func Watch(system *actor.ActorSystem, c Counter) (stop func()) {
	sub := system.EventStream.Subscribe(func(evt any) {
		if ev, ok := evt.(*actor.SupervisorEvent); ok {
			c.Inc(Kind(ev.Child), ev.Directive.String())
		}
	})
	return func() { system.EventStream.Unsubscribe(sub) }
}

// ErrInjected is the panic value a Faults hook raises, so that a test can tell
// an injected crash from a real one in logs and counters.
var ErrInjected = errors.New("supervision: injected fault")

// Faults injects panics into chosen actors. A nil *Faults injects nothing and
// costs one nil check per message, which is what production nodes carry: the
// only way to obtain a non-nil one is NewFaults, which only tests call (the
// node exposes it through an option documented as test-only).
type Faults struct {
	mu    sync.Mutex
	rules []*rule
	fired map[string]int
}

type rule struct {
	kind  string
	match func(msg any) bool
	left  int
}

// NewFaults returns an empty fault injector.
func NewFaults() *Faults { return &Faults{fired: make(map[string]int)} }

// PanicOn makes the next n messages that match (for actors of the given kind)
// panic with ErrInjected instead of being handled. match nil matches any user
// message. The message that panicked is not redelivered (protoactor's rule),
// which is exactly the loss a restart must be able to survive.
func (f *Faults) PanicOn(kind string, n int, match func(msg any) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{kind: kind, match: match, left: n})
}

// Fired reports how many panics were injected into actors of kind.
func (f *Faults) Fired(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fired[kind]
}

// Middleware returns receiver middleware for an actor of the given kind. With
// a nil receiver it returns nil, so callers can pass the result straight to
// actor.WithReceiverMiddleware only when it is non-nil.
func (f *Faults) Middleware(kind string) actor.ReceiverMiddleware {
	if f == nil {
		return nil
	}
	return func(next actor.ReceiverFunc) actor.ReceiverFunc {
		return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
			if f.trigger(kind, env.Message) {
				panic(ErrInjected)
			}
			next(c, env)
		}
	}
}

func (f *Faults) trigger(kind string, msg any) bool {
	switch msg.(type) {
	case actor.SystemMessage, actor.AutoReceiveMessage:
		// Lifecycle messages are never faulted: a panic in Started would
		// loop restarts without exercising any recovery path.
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.rules {
		if r.kind != kind || (r.match != nil && !r.match(msg)) {
			continue
		}
		r.left--
		if r.left <= 0 {
			f.rules = append(f.rules[:i], f.rules[i+1:]...)
		}
		f.fired[kind]++
		return true
	}
	return false
}

// Props decorates props for an actor of the given kind with the tree's
// strategy (for the actor's own children) and, when faults is non-nil, the
// fault-injection middleware.
func Props(props *actor.Props, kind string, l Limits, faults *Faults) *actor.Props {
	opts := []actor.PropsOption{actor.WithSupervisor(Strategy(l))}
	if mw := faults.Middleware(kind); mw != nil {
		opts = append(opts, actor.WithReceiverMiddleware(mw))
	}
	return props.Configure(opts...)
}
