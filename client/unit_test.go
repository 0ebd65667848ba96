package client

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/zraft/zraft/codec"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A client-only binary must not link the node's heavy dependencies.
func TestImportsNoServerPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/zraft/zraft/transport") {
		t.Fatalf("go list -deps output lacks the transport package: %q", out)
	}
	for _, dep := range deps {
		for _, banned := range []string{"lni/dragonboat", "protoactor", "zraft/zraft/fsm", "zraft/zraft/actors", "zraft/zraft/node", "zraft/zraft/supervision"} {
			if strings.Contains(dep, banned) {
				t.Errorf("client depends on %s", dep)
			}
		}
	}
}

func TestBackoffSchedule(t *testing.T) {
	b := backoff{initial: 100 * time.Millisecond, max: 30 * time.Second, factor: 2, jitter: 0.25}
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{0, 0.5, 100 * time.Millisecond}, // r=0.5 is no jitter
		{1, 0.5, 200 * time.Millisecond},
		{2, 0.5, 400 * time.Millisecond},
		{0, 0, 75 * time.Millisecond},         // -25 %
		{0, 0.999999, 125 * time.Millisecond}, // just under +25 %
		{8, 0.5, 25600 * time.Millisecond},
		{9, 0.5, 30 * time.Second},       // capped
		{9, 0, 22500 * time.Millisecond}, // jitter applies to the capped value
		{9, 0.999, 30 * time.Second},     // never above the cap
		{1000, 0.5, 30 * time.Second},    // no overflow
		{-1, 0.5, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		got := b.delay(tt.n, tt.r)
		diff := got - tt.want
		if diff < 0 {
			diff = -diff
		}
		if diff > time.Millisecond/10 {
			t.Errorf("delay(%d, %v) = %v, want %v", tt.n, tt.r, got, tt.want)
		}
	}
}

func TestBackoffValidate(t *testing.T) {
	bad := []backoff{
		{initial: 0, max: time.Second, factor: 2},
		{initial: time.Second, max: time.Millisecond, factor: 2},
		{initial: time.Millisecond, max: time.Second, factor: 0.5},
		{initial: time.Millisecond, max: time.Second, factor: 2, jitter: 1},
		{initial: time.Millisecond, max: time.Second, factor: 2, jitter: -0.1},
	}
	for _, b := range bad {
		if err := b.validate(); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%+v: validate = %v, want ErrInvalidOption", b, err)
		}
	}
	if err := defaultOptions().backoff.validate(); err != nil {
		t.Errorf("default backoff invalid: %v", err)
	}
}

func TestOptionsDefaultsAndValidation(t *testing.T) {
	o := defaultOptions()
	if o.keepAliveMisses != 3 || o.maxAttempts != 5 || o.backoff.initial != 100*time.Millisecond ||
		o.backoff.max != 30*time.Second || o.backoff.factor != 2 || o.backoff.jitter != 0.25 {
		t.Errorf("defaults differ from the documented ones: %+v", o)
	}
	if defaultOptions() == o || &defaultOptions().capabilities == &o.capabilities {
		t.Error("defaultOptions must build a fresh value")
	}
	invalid := []Option{
		WithKeepAliveMisses(0), WithMaxAttempts(0), WithRequestTimeout(0), WithDialTimeout(-1),
		WithMaxPending(0), WithServerRequestBuffer(0), WithLogger(nil), WithBreaker(0, time.Second),
		WithBreaker(1, 0), WithBackoff(0, 0, 0, 0), WithLimits(codec.Limits{}),
	}
	for i, opt := range invalid {
		o := defaultOptions()
		opt(o)
		if err := o.validate(); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("option %d: validate = %v, want ErrInvalidOption", i, err)
		}
	}
	o = defaultOptions()
	WithServerRequestHandler(func(ServerRequest) {})(o)
	WithServerRequests(make(chan ServerRequest))(o)
	if err := o.validate(); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("handler and channel together: %v", err)
	}
	o = defaultOptions()
	WithCapabilities(map[string]string{"zeta": "1", "alpha": "2", "mid": ""})(o)
	want := []codec.Capability{{Name: "alpha", Value: "2"}, {Name: "mid"}, {Name: "zeta", Value: "1"}}
	if len(o.capabilities) != len(want) {
		t.Fatalf("capabilities = %v", o.capabilities)
	}
	for i := range want {
		if o.capabilities[i] != want[i] {
			t.Errorf("capabilities = %v, want sorted %v", o.capabilities, want)
		}
	}
}

func TestCodeErrorMapping(t *testing.T) {
	tests := []struct {
		code codec.Code
		want error
	}{
		{codec.CodeNotLeader, ErrNotLeader},
		{codec.CodeClusterUnavailable, ErrClusterUnavailable},
		{codec.CodeSessionNotFound, ErrSessionExpired},
		{codec.CodeSessionExpired, ErrSessionExpired},
		{codec.CodeBadSecret, ErrRejected},
		{codec.CodeRejected, ErrRejected},
		{codec.CodeRateLimited, ErrRateLimited},
		{codec.CodeTooManySessions, ErrTooManySessions},
		{codec.CodeOverloaded, ErrOverloaded},
		{codec.CodeOutcomeUnknown, ErrOutcomeUnknown},
		{codec.CodeResponseEvicted, ErrResponseEvicted},
		{codec.CodeTooManyInFlight, ErrTooManyInFlight},
		{codec.CodeTooLarge, ErrTooLarge},
		{codec.CodeMalformed, ErrMalformed},
		{codec.CodeShuttingDown, ErrShuttingDown},
		{codec.CodeClientClosed, ErrClosed},
		{codec.CodeSessionMoved, ErrSessionMoved},
		{codec.CodeInternal, ErrInternal},
		{codec.CodeUnsupported, ErrUnsupported},
		{codec.CodeQuotaExceeded, ErrQuotaExceeded},
		{codec.CodeUnspecified, ErrProtocol},
		{codec.Code(200), ErrProtocol},
	}
	for _, tt := range tests {
		err := remoteError(tt.code, 0, "detail")
		if !errors.Is(err, tt.want) {
			t.Errorf("code %v: %v does not match %v", tt.code, err, tt.want)
		}
		if !strings.HasPrefix(err.Error(), "client: ") || !strings.HasSuffix(err.Error(), ": detail") {
			t.Errorf("code %v: message %q", tt.code, err)
		}
	}
	err := remoteError(codec.CodeApplication, 7, "bad input")
	var app *AppError
	if !errors.As(err, &app) || app.Code != 7 || app.Message != "bad input" || !errors.Is(err, ErrApplication) {
		t.Errorf("application code: %#v", err)
	}
}

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		code codec.Code
		want retryAction
	}{
		{codec.CodeNotLeader, actionRedirect},
		{codec.CodeShuttingDown, actionRedirect},
		{codec.CodeOverloaded, actionBackoff},
		{codec.CodeClusterUnavailable, actionRedirect},
		{codec.CodeOutOfOrder, actionReorder},
		{codec.CodeOutcomeUnknown, actionBackoff},
		{codec.CodeTooManyInFlight, actionBackoff},
		{codec.CodeSessionNotFound, actionReconnect},
		{codec.CodeSessionMoved, actionReconnect},
		{codec.CodeSessionExpired, actionLost},
		{codec.CodeApplication, actionFail},
		{codec.CodeResponseEvicted, actionFail},
		{codec.CodeTooLarge, actionFail},
		{codec.CodeUnsupported, actionFail},
		{codec.CodeMalformed, actionFail},
		{codec.CodeInternal, actionFail},
		{codec.CodeQuotaExceeded, actionFail},
	}
	for _, tt := range tests {
		if got := classify(tt.code); got != tt.want {
			t.Errorf("classify(%v) = %v, want %v", tt.code, got, tt.want)
		}
		// The client retries itself exactly what the protocol calls
		// retryable (except the session-creation-only codes).
		if retried := tt.want == actionRedirect || tt.want == actionBackoff || tt.want == actionReorder; retried != tt.code.Retryable() {
			t.Errorf("code %v: client retries = %v, protocol Retryable = %v", tt.code, retried, tt.code.Retryable())
		}
	}
}

func TestReorderDeliversInOrderOnce(t *testing.T) {
	o := newReorder(4, 0)
	sr := func(id uint64) ServerRequest { return ServerRequest{ID: id} }
	ids := func(rs []ServerRequest) []uint64 {
		var out []uint64
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	o.offer(sr(3))
	o.offer(sr(2))
	if got := o.take(10); len(got) != 0 || o.acked != 0 {
		t.Fatalf("delivered %v before id 1 arrived", ids(got))
	}
	o.offer(sr(1))
	if got := ids(o.take(10)); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 || o.acked != 3 {
		t.Fatalf("take = %v, acked %d; want [1 2 3], 3", got, o.acked)
	}
	if o.offer(sr(2)) != offerDuplicate {
		t.Error("id 2 again is not reported as a duplicate")
	}
	if got := o.take(10); len(got) != 0 {
		t.Errorf("duplicate delivered again: %v", ids(got))
	}
	// The window holds acked+1 .. acked+limit; beyond it requests are
	// dropped unacknowledged.
	o.offer(sr(8))
	if len(o.held) != 0 {
		t.Errorf("id 8 held beyond the window of 4 after 3")
	}
	o.offer(sr(5))
	o.offer(sr(5))
	o.offer(sr(4))
	// Only room for one: the rest stays held, unacknowledged.
	if got := ids(o.take(1)); len(got) != 1 || got[0] != 4 || o.acked != 4 {
		t.Fatalf("take(1) = %v, acked %d", got, o.acked)
	}
	if !o.ready() {
		t.Error("id 5 held but not ready")
	}
	if got := ids(o.take(1)); len(got) != 1 || got[0] != 5 {
		t.Fatalf("take(1) = %v", got)
	}
	if o.ready() || len(o.held) != 0 {
		t.Errorf("held = %v after draining", o.held)
	}
}

func TestPendingTable(t *testing.T) {
	p := newPending(4)
	mk := func(query bool) *call { return &call{query: query, pub: &Call{Done: make(chan *Call, 1)}} }
	var cmds []*call
	for range 3 {
		c := mk(false)
		if err := p.add(c); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	q := mk(true)
	if err := p.add(q); err != nil {
		t.Fatal(err)
	}
	if cmds[0].id != 1 || cmds[2].id != 3 || q.id != 1 {
		t.Errorf("ids %d %d, query %d; want 1 3, 1", cmds[0].id, cmds[2].id, q.id)
	}
	if err := p.add(mk(false)); !errors.Is(err, ErrOverloaded) {
		t.Errorf("add to a full table = %v, want ErrOverloaded", err)
	}
	if got := p.lowestPending(); got != 1 {
		t.Errorf("lowestPending = %d, want 1", got)
	}
	p.remove(cmds[1])
	if got := p.lowestPending(); got != 1 {
		t.Errorf("lowestPending after removing 2 = %d, want 1", got)
	}
	p.remove(cmds[0])
	if got := p.lowestPending(); got != 3 {
		t.Errorf("lowestPending after removing 1 = %d, want 3", got)
	}
	p.remove(cmds[2])
	if got := p.lowestPending(); got != 4 {
		t.Errorf("lowestPending with nothing pending = %d, want the next id 4", got)
	}
	if p.get(false, 3) != nil || p.get(true, 1) != q {
		t.Error("get returns removed calls or misses pending ones")
	}

	base := time.Unix(1000, 0)
	a, b, c := mk(false), mk(false), mk(false)
	for _, x := range []*call{a, b, c} {
		if err := p.add(x); err != nil {
			t.Fatal(err)
		}
	}
	p.setTimer(a, stateInFlight, base.Add(3*time.Second))
	p.setTimer(b, stateWaiting, base.Add(1*time.Second))
	p.setTimer(c, stateInFlight, base.Add(2*time.Second))
	p.setTimer(a, stateInFlight, base.Add(500*time.Millisecond)) // rescheduled earlier
	if d, _ := p.nextDeadline(); !d.Equal(base.Add(500 * time.Millisecond)) {
		t.Errorf("nextDeadline = %v", d)
	}
	if got := p.popDue(base); got != nil {
		t.Errorf("popDue before any deadline = call %d", got.id)
	}
	var order []uint64
	for x := p.popDue(base.Add(time.Hour)); x != nil; x = p.popDue(base.Add(time.Hour)) {
		order = append(order, x.id)
	}
	if len(order) != 3 || order[0] != a.id || order[1] != b.id || order[2] != c.id {
		t.Errorf("timers fired in order %v, want %d %d %d", order, a.id, b.id, c.id)
	}
	all := p.inOrder()
	if len(all) != 4 || all[0] != a || all[1] != b || all[2] != c || all[3] != q {
		t.Errorf("inOrder is not commands by id then queries")
	}
}

// TestPendingWindowAndOrder pins down which calls pump sends: queries at
// once, commands only below lowest pending + window, and a command refused
// as OutOfOrder only after an earlier one is sent again or once it is the
// oldest.
func TestPendingWindowAndOrder(t *testing.T) {
	p := newPending(100)
	mk := func(query bool) *call { return &call{query: query, pub: &Call{Done: make(chan *Call, 1)}} }
	ids := func(cs []*call) []uint64 {
		var out []uint64
		for _, c := range cs {
			out = append(out, c.id)
		}
		return out
	}
	send := func(cs []*call) {
		for _, c := range cs {
			c.sent = true
			p.setTimer(c, stateInFlight, time.Unix(0, 0))
		}
	}
	var cmds []*call
	for range 6 {
		c := mk(false)
		if err := p.add(c); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	q := mk(true)
	_ = p.add(q)
	got := p.take(3)
	if want := []uint64{1, 1, 2, 3}; !slices.Equal(ids(got), want) {
		t.Fatalf("take(3) = %v, want query 1 then commands 1 2 3 (window of 3 above lowest pending 1)", ids(got))
	}
	send(got)
	if got := p.take(3); len(got) != 0 {
		t.Fatalf("nothing may be sent while ids 1-3 are in flight, got %v", ids(got))
	}
	// 2 and 3 are answered: the window moves only as far as id 1 allows.
	p.remove(cmds[1])
	p.remove(cmds[2])
	if got := ids(p.take(3)); len(got) != 0 {
		t.Fatalf("window must stay anchored at the oldest pending id 1, got %v", got)
	}
	// 1 is answered: 4, 5 and 6 may go.
	p.remove(cmds[0])
	got = p.take(3)
	if want := []uint64{4, 5, 6}; !slices.Equal(ids(got), want) {
		t.Fatalf("take = %v, want %v", ids(got), want)
	}
	send(got)
	// 5 and 6 overtook 4 on the server: they wait for 4.
	p.block(cmds[4])
	p.block(cmds[5])
	if got := ids(p.take(3)); len(got) != 0 {
		t.Fatalf("blocked commands sent before 4 was sent again: %v", got)
	}
	// 4 times out and is due again: 4, 5, 6 go in order.
	p.setDue(cmds[3], true)
	if want, got := []uint64{4, 5, 6}, ids(p.take(3)); !slices.Equal(got, want) {
		t.Fatalf("take = %v, want %v", got, want)
	}
	send([]*call{cmds[3], cmds[4], cmds[5]})
	// 5 blocked again, and 4 completes: 5 is now the oldest and goes alone.
	p.block(cmds[4])
	p.remove(cmds[3])
	if want, got := []uint64{5}, ids(p.take(3)); !slices.Equal(got, want) {
		t.Fatalf("take = %v, want %v", got, want)
	}
}

func TestEndpointsShareOneEntryPerAddress(t *testing.T) {
	c := &Conn{opts: defaultOptions(), log: defaultOptions().logger}
	s := endpointSet{settings: c.breakerSettings}
	a := s.add("127.0.0.1:7101")
	if b := s.add("tcp://127.0.0.1:7101"); b != a || len(s.list) != 1 {
		t.Fatalf("tcp://host:port and host:port are %d endpoints", len(s.list))
	}
	if s.lookup("tcp://127.0.0.1:7101") != a {
		t.Fatal("lookup with the scheme misses the endpoint")
	}
}
