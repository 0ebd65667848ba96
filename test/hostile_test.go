package test

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
	dto "github.com/prometheus/client_model/go"

	"github.com/zraft/zraft/client"
	"github.com/zraft/zraft/codec"
	"github.com/zraft/zraft/kv"
	"github.com/zraft/zraft/node"
	"github.com/zraft/zraft/transport"
)

// The hostile-load suite (issue 10) attacks a 3-node cluster from another
// loopback address (127.0.0.2, so per-source limits apply to the attacker
// and not to the well-behaved client on 127.0.0.1) while a probe client
// writes throughout. The default runs are short; -hostile.full runs the
// issue's full sizes and durations:
//
//	go test -race ./test/ -run Hostile -hostile.full -v
var hostileFull = flag.Bool("hostile.full", false, "run the hostile-load tests at full size")

// memoryBudget is the worst-case figure docs/operations.md states for a
// node at the default limits; the whole test process (three nodes) must
// stay under it.
const memoryBudget = 2 << 30

var attackerAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}

// probeLimit bounds each probe: dialling a fresh client (a new session, a
// Raft proposal) and one write. The issue asks for 2 s, which the full runs
// assert (run them without -race); the default suite runs under -race on a
// shared 2-core CI machine, where the same work takes several times longer,
// so it allows 5 s.
func probeLimit() time.Duration {
	if *hostileFull {
		return 2 * time.Second
	}
	return 5 * time.Second
}

// probe writes through a fresh client connection once per interval until
// stop is closed and reports the first write not answered within
// probeLimit.
func probe(c *cluster, every time.Duration, stop <-chan struct{}) <-chan error {
	out := make(chan error, 1)
	go func() {
		defer close(out)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			if err := probeOnce(c); err != nil {
				out <- fmt.Errorf("probe %d: %w", i, err)
				return
			}
		}
	}()
	return out
}

func probeOnce(c *cluster) error {
	ctx, cancel := context.WithTimeout(context.Background(), probeLimit())
	defer cancel()
	conn, err := client.Dial(ctx, c.Endpoints())
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	_, err = conn.Submit(ctx, kv.EncodeSet("probe", []byte("x")))
	return err
}

// rss reads the process's resident memory from /proc.
func rss(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if kb, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			return n << 10
		}
	}
	t.Fatal("VmRSS not found")
	return 0
}

// metric sums the samples of a metric on n whose labels include want.
func metric(t *testing.T, n *node.Node, name string, want ...string) float64 {
	t.Helper()
	mfs, err := n.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			found = found || (l.GetName() == want[i] && l.GetValue() == want[i+1])
		}
		if !found {
			return false
		}
	}
	return true
}

// Issue 10, row 1: connections that send nothing, or their greeting a
// byte at a time, from one host used to take all 256 handshake slots of
// every node and lock new clients out (CLI 1 of 6; 0 of 5 at 400).
func TestHostileHandshakeFlood(t *testing.T) {
	conns, dur := 260, 3*time.Second
	if *hostileFull {
		conns, dur = 400, 20*time.Second
	}
	for _, mode := range []string{"silent", "byte-by-byte"} {
		t.Run(mode, func(t *testing.T) {
			c := startAppCluster(t, nil, kvApp)
			leader := c.leader(t)
			if err := probeOnce(c); err != nil {
				t.Fatalf("before the attack: %v", err)
			}
			d := net.Dialer{LocalAddr: attackerAddr, Timeout: time.Second}
			var attack []net.Conn
			t.Cleanup(func() {
				for _, nc := range attack {
					_ = nc.Close()
				}
			})
			for _, n := range c.Nodes() {
				for range conns {
					nc, err := d.Dial("tcp", n.ClientAddr())
					if err != nil {
						t.Fatalf("attacker dial: %v", err)
					}
					attack = append(attack, nc)
				}
			}
			stop := make(chan struct{})
			errs := probe(c, 300*time.Millisecond, stop)
			end := time.Now().Add(dur)
			for i := 0; time.Now().Before(end); i++ {
				if mode == "byte-by-byte" && i < 11 {
					for _, nc := range attack {
						_, _ = nc.Write([]byte{0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3}[i : i+1])
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			close(stop)
			if err := <-errs; err != nil {
				t.Fatalf("well-behaved client not served during the attack: %v", err)
			}
			if got := metric(t, leader, "zraft_client_conns_refused_total", "reason", "max_handshakes_per_source"); got < float64(conns-node.DefaultConfig().MaxHandshakesPerSource) {
				t.Fatalf("refused for the source = %v, want at least %d", got, conns-node.DefaultConfig().MaxHandshakesPerSource)
			}
			if got := metric(t, leader, "zraft_client_conns_refused_total", "reason", "max_handshakes"); got != 0 {
				t.Fatalf("refused at the global handshake limit = %v, want 0", got)
			}
			m := rss(t)
			t.Logf("%d attacker connections per node for %v: probes all served; leader refused %v for the source, handshakes in progress %v; process RSS %d MiB",
				conns, dur, metric(t, leader, "zraft_client_conns_refused_total", "reason", "max_handshakes_per_source"),
				metric(t, leader, "zraft_client_handshakes_in_progress"), m>>20)
			if m > memoryBudget {
				t.Fatalf("RSS %d MiB over the %d MiB budget", m>>20, memoryBudget>>20)
			}
		})
	}
}

// Issue 10, row 6: connections that never read their replies used to keep
// 1,024 frames of any size queued on the leader (85 MB each, 3.3 GB for
// 40). Each is now cut as a slow consumer at send_queue_bytes (2 MiB here,
// so that the attack's bytes are well past it plus the socket buffers; the
// session timeout is long enough that the attacker, which sends no
// keep-alives, keeps its session while its reads are answered).
func TestHostileNonReadingConnections(t *testing.T) {
	conns, queries := 4, 300
	if *hostileFull {
		conns, queries = 40, 300
	}
	c := startAppCluster(t, func(cfg *node.Config) {
		cfg.MaxFrame = 1 << 20
		cfg.SendQueueBytes = 2 << 20
		cfg.SessionTimeout = time.Minute
	}, kvApp)
	leader := c.leader(t)
	value := make([]byte, 64000)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	good := dialClient(t, c)
	if _, err := good.Submit(ctx, kv.EncodeSet("big", value)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := probe(c, 300*time.Millisecond, stop)
	var attackers []*transport.Conn
	t.Cleanup(func() {
		for _, a := range attackers {
			_ = a.Close()
		}
	})
	for range conns {
		attackers = append(attackers, openAttacker(t, leader.ClientAddr()))
	}
	for _, a := range attackers {
		for q := range queries {
			f, err := codec.Encode(&codec.Query{CorrelationID: uint64(q + 1), Consistency: codec.Stale, Payload: kv.EncodeGet("big")})
			if err != nil {
				t.Fatal(err)
			}
			if a.Send(f) != nil {
				break // closed as a slow consumer already
			}
		}
	}
	deadline := time.Now().Add(waitTimeout)
	for metric(t, leader, "zraft_client_slow_consumers_total") < float64(conns) && time.Now().Before(deadline) {
		if q := metric(t, leader, "zraft_client_queued_bytes"); q > float64(node.DefaultConfig().MaxQueuedBytes) {
			t.Fatalf("queued bytes %v over max_queued_bytes", q)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Fatalf("well-behaved client not served during the attack: %v", err)
	}
	if got := metric(t, leader, "zraft_client_slow_consumers_total"); got < float64(conns) {
		t.Fatalf("slow-consumer disconnects = %v, want %d", got, conns)
	}
	m := rss(t)
	t.Logf("%d non-reading connections, %d queries of 64,000 bytes each: probes all served; %v slow-consumer disconnects; process RSS %d MiB",
		conns, queries, metric(t, leader, "zraft_client_slow_consumers_total"), m>>20)
	if m > memoryBudget {
		t.Fatalf("RSS %d MiB over the %d MiB budget", m>>20, memoryBudget>>20)
	}
}

// openAttacker dials (from 127.0.0.1: transport.Dial does not choose its
// source address, and per-source limits are not what this attack tests),
// creates a session and from then on never reads.
func openAttacker(t *testing.T, addr string) *transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := transport.Dial(ctx, addr, transport.DefaultDialConfig())
	if err != nil {
		t.Fatal(err)
	}
	var secret codec.Secret
	binary.BigEndian.PutUint64(secret[:], uint64(time.Now().UnixNano()))
	f, _ := codec.Encode(&codec.CreateSession{Nonce: 1, Secret: secret})
	if err := conn.Send(f); err != nil {
		t.Fatal(err)
	}
	for {
		b, err := conn.Recv()
		if err != nil {
			t.Fatalf("attacker session: %v", err)
		}
		m, err := codec.Decode(b, nil)
		if err == nil && m.Kind() == codec.KindSessionCreated {
			return conn
		}
	}
}

// Issue 10, row 4: with max_sessions held by one source, a new client's
// error said "not leader". It is TooManySessions (typed), from every
// member the client tries. (Already true after the client rework on main;
// kept as a regression test.)
func TestHostileSessionLimitTypedError(t *testing.T) {
	c := startAppCluster(t, func(cfg *node.Config) { cfg.MaxSessions = 3 }, kvApp)
	for range 3 {
		dialClient(t, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, c.Endpoints())
	if err == nil {
		_ = conn.Close()
		t.Fatal("a fourth session was created past max_sessions 3")
	}
	if !errors.Is(err, client.ErrTooManySessions) || errors.Is(err, client.ErrNotLeader) {
		t.Fatalf("Dial = %v, want client.ErrTooManySessions (and not ErrNotLeader)", err)
	}
}

// A client refused at a connection limit gets client.ErrTooManyConnections
// naming the limit, not a bare EOF (issue 10, "errors that say what
// happened").
func TestHostileConnectionLimitTypedError(t *testing.T) {
	c := startAppCluster(t, func(cfg *node.Config) { cfg.MaxConnsPerSource = 1 }, kvApp)
	leader := c.leader(t).ClientAddr()
	hctx, hcancel := context.WithTimeout(context.Background(), waitTimeout)
	holder, err := client.Dial(hctx, []string{leader})
	hcancel()
	if err != nil {
		t.Fatalf("first connection: %v", err)
	}
	defer holder.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := client.Dial(ctx, []string{leader})
	if err == nil {
		_ = conn.Close()
		t.Fatal("a second connection from 127.0.0.1 was accepted with max_conns_per_source 1")
	}
	if !errors.Is(err, client.ErrTooManyConnections) || !strings.Contains(err.Error(), "max_conns_per_source") {
		t.Fatalf("Dial = %v, want client.ErrTooManyConnections naming max_conns_per_source", err)
	}
}

// Issue 10, last row: 9-byte frame headers announcing 4 MiB used to make
// the node allocate the whole 4 MiB before any body byte arrived (32
// connections: +130 MiB of heap). Memory now follows the bytes received:
// each such connection pins at most its first 4 KiB (the rest waits for
// the node-wide reading budget, max_reading_bytes).
func TestHostileHugeFrameHeaders(t *testing.T) {
	conns := 100
	if *hostileFull {
		conns = 1000
	}
	c := startAppCluster(t, nil, kvApp)
	leader := c.leader(t)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	before := heap()
	d := net.Dialer{LocalAddr: attackerAddr, Timeout: waitTimeout}
	header := []byte{0x02, 0, 0, 0, 0, 0, 0x3F, 0xFF, 0xFF} // long data frame of 4 MiB - 1
	for range conns {
		nc, err := d.Dial("tcp", leader.ClientAddr())
		if err != nil {
			t.Fatalf("attacker dial: %v", err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		_ = nc.SetDeadline(time.Now().Add(waitTimeout))
		if _, err := zmq4.Open(nc, null.Security(), zmq4.Dealer, nil, false, nil); err != nil {
			t.Fatalf("attacker handshake: %v", err)
		}
		if _, err := nc.Write(header); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(waitTimeout)
	for metric(t, leader, "zraft_client_conns") < float64(conns) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // let the readers reach the body
	grown := int64(heap()) - int64(before)
	if err := probeOnce(c); err != nil {
		t.Fatalf("well-behaved client not served: %v", err)
	}
	t.Logf("%d connections each announcing a 4 MiB frame: heap grew %d MiB (the whole frames would be %d MiB)", conns, grown>>20, conns*4)
	// 4 KiB pinned per connection plus its buffers and goroutines; the
	// bound is 1 MiB each, a quarter of what allocating the announced
	// frames would take.
	if grown > int64(conns)<<20 {
		t.Fatalf("heap grew %d MiB for %d connections: the announced frames were allocated", grown>>20, conns)
	}
}

// srcWire is a raw protocol connection from the attacker's address
// (127.0.0.2), so that per-source limits count it apart from the probe:
// the ZMTP handshake through zmq4, then one frame per message. A reader
// goroutine decodes what the node sends into in.
type srcWire struct {
	nc   net.Conn
	zc   *zmq4.Conn
	in   chan codec.Message
	done chan struct{}
}

func dialFrom(t *testing.T, addr string) *srcWire {
	t.Helper()
	d := net.Dialer{LocalAddr: attackerAddr, Timeout: waitTimeout}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("attacker dial: %v", err)
	}
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	id := zmq4.SocketIdentity(fmt.Sprintf("\x80attacker-%d", secretSeq.Add(1)))
	zc, err := zmq4.Open(nc, null.Security(), zmq4.Dealer, id, false, nil)
	if err != nil {
		_ = nc.Close()
		t.Fatalf("attacker handshake: %v", err)
	}
	_ = nc.SetDeadline(time.Time{})
	w := &srcWire{nc: nc, zc: zc, in: make(chan codec.Message, 4096), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer close(w.in)
		for {
			msg, err := zc.RecvMsg()
			if err != nil {
				return
			}
			if len(msg.Frames) != 1 {
				continue
			}
			m, err := codec.Decode(msg.Frames[0], nil)
			if err != nil {
				continue
			}
			select {
			case w.in <- m:
			default: // the attacker does not care what it misses
			}
		}
	}()
	t.Cleanup(func() {
		_ = nc.Close()
		<-w.done
	})
	return w
}

func (w *srcWire) send(t *testing.T, m codec.Message) error {
	t.Helper()
	f, err := codec.Encode(m)
	if err != nil {
		t.Fatalf("encode %v: %v", m.Kind(), err)
	}
	return w.zc.SendMsg(zmq4.NewMsg(f))
}

// next returns the next message match accepts within d.
func (w *srcWire) next(d time.Duration, match func(codec.Message) bool) (codec.Message, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m, ok := <-w.in:
			if !ok {
				return nil, fmt.Errorf("%w: connection closed", errNoMessage)
			}
			if match(m) {
				return m, nil
			}
		case <-timer.C:
			return nil, fmt.Errorf("%w within %v", errNoMessage, d)
		}
	}
}

// createSession asks for a session and returns the node's answer
// (SessionCreated or SessionRejected).
func (w *srcWire) createSession(t *testing.T) codec.Message {
	t.Helper()
	var secret codec.Secret
	seq := secretSeq.Add(1)
	binary.BigEndian.PutUint64(secret[:], uint64(time.Now().UnixNano())+seq)
	if err := w.send(t, &codec.CreateSession{Nonce: seq, Secret: secret}); err != nil {
		t.Fatalf("attacker CreateSession: %v", err)
	}
	m, err := w.next(waitTimeout, kindIs(codec.KindSessionCreated, codec.KindSessionRejected))
	if err != nil {
		t.Fatalf("attacker CreateSession: %v", err)
	}
	return m
}

// checkAlive fails the test unless every member knows the same leader and
// answers a linearizable read within probeLimit.
func checkAlive(t *testing.T, c *cluster) {
	t.Helper()
	leader, _, ok := c.Nodes()[0].Leader()
	for _, n := range c.Nodes() {
		id, _, known := n.Leader()
		if !known || !ok || id != leader {
			t.Fatalf("member %d: leader %d (known %v), member %d says %d", n.ID(), id, known, c.Nodes()[0].ID(), leader)
		}
		ctx, cancel := context.WithTimeout(context.Background(), probeLimit())
		_, err := n.Read(ctx, []byte("any"))
		cancel()
		// The application may refuse the query's bytes; a Raft or
		// availability failure is what would say the member is not alive.
		var coded interface{ AppCode() uint32 }
		if err != nil && !errors.As(err, &coded) {
			t.Fatalf("member %d: linearizable read: %v", n.ID(), err)
		}
	}
}

// checkMemory fails the test when the Go heap in use after a collection
// or, without -race, the process's RSS is over the budget (the whole
// process holds three members, whose in-memory Raft logs count too). RSS
// also holds garbage not yet returned to the system, earlier tests' memory,
// and under -race the detector's shadow memory, several times the heap.
func checkMemory(t *testing.T) int64 {
	t.Helper()
	m := rss(t)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("process RSS %d MiB, Go heap in use after GC %d MiB (three members)", m>>20, ms.HeapInuse>>20)
	if ms.HeapInuse > memoryBudget {
		t.Fatalf("Go heap %d MiB over the %d MiB budget", ms.HeapInuse>>20, memoryBudget>>20)
	}
	if m > memoryBudget && !raceEnabled {
		t.Fatalf("RSS %d MiB over the %d MiB budget", m>>20, memoryBudget>>20)
	}
	return m
}

// Issue 10, rows 2 and 4: one source bound 10,000 sessions and kept them
// alive, so that max_conns and the leader's memory went to it and other
// clients failed (with "not leader" once max_sessions was reached). Now the
// leader serves at most max_sessions_per_source sessions per source: the
// attacker's next CreateSession gets SessionRejected(TooManySessions), while
// a client from another source is still served.
func TestHostileSessionsPerSource(t *testing.T) {
	limit, conns := 40, 60
	if *hostileFull {
		limit, conns = 500, 900
	}
	c := startAppCluster(t, func(cfg *node.Config) {
		cfg.MaxSessionsPerSource = limit
		cfg.SessionTimeout = time.Minute // the attacker's sessions stay without keep-alives
	}, kvApp)
	leader := c.leader(t)
	stop := make(chan struct{})
	errs := probe(c, 300*time.Millisecond, stop)
	// Every connection asks at once, before any answer: creations in
	// flight count against the source too.
	ws := make([]*srcWire, conns)
	for i := range ws {
		ws[i] = dialFrom(t, leader.ClientAddr())
	}
	for _, w := range ws {
		var secret codec.Secret
		seq := secretSeq.Add(1)
		binary.BigEndian.PutUint64(secret[:], uint64(time.Now().UnixNano())+seq)
		if err := w.send(t, &codec.CreateSession{Nonce: seq, Secret: secret}); err != nil {
			t.Fatal(err)
		}
	}
	created, refused := 0, 0
	for _, w := range ws {
		m, err := w.next(waitTimeout, kindIs(codec.KindSessionCreated, codec.KindSessionRejected))
		if err != nil {
			t.Fatalf("attacker CreateSession: %v", err)
		}
		switch m := m.(type) {
		case *codec.SessionCreated:
			created++
		case *codec.SessionRejected:
			if m.Reason != codec.CodeTooManySessions {
				t.Fatalf("attacker's session refused with %v (%s), want TooManySessions", m.Reason, m.Message)
			}
			refused++
		}
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Fatalf("well-behaved client not served during the attack: %v", err)
	}
	if created != limit || refused != conns-limit {
		t.Fatalf("attacker got %d sessions and %d refusals, want %d and %d", created, refused, limit, conns-limit)
	}
	if got := metric(t, leader, "zraft_sessions_refused_total", "reason", "per_source"); got != float64(conns-limit) {
		t.Fatalf("zraft_sessions_refused_total{reason=per_source} = %v, want %d", got, conns-limit)
	}
	checkAlive(t, c)
	m := checkMemory(t)
	t.Logf("one source asked for %d sessions: %d created, %d refused TooManySessions; probes all served; process RSS %d MiB",
		conns, created, refused, m>>20)
}

// The per-source session limit and the creation rate limit reach a client
// of this library as their own errors, never as "not leader".
func TestHostileSessionRefusalsTyped(t *testing.T) {
	t.Run("per source", func(t *testing.T) {
		c := startAppCluster(t, func(cfg *node.Config) { cfg.MaxSessionsPerSource = 2 }, kvApp)
		for range 2 {
			dialClient(t, c)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := client.Dial(ctx, c.Endpoints())
		if err == nil {
			_ = conn.Close()
			t.Fatal("a third session from one source was created with max_sessions_per_source 2")
		}
		if !errors.Is(err, client.ErrTooManySessions) || errors.Is(err, client.ErrNotLeader) {
			t.Fatalf("Dial = %v, want client.ErrTooManySessions (and not ErrNotLeader)", err)
		}
	})
	t.Run("rate", func(t *testing.T) {
		c := startAppCluster(t, func(cfg *node.Config) { cfg.SessionCreateRate = 1 }, kvApp)
		dialClient(t, c)
		// The bucket (burst 1) is empty for a second; a Dial that must
		// finish sooner fails with the refusal it got.
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		conn, err := client.Dial(ctx, c.Endpoints())
		if err == nil {
			_ = conn.Close()
			t.Fatal("a second session was created within a second at session_create_rate 1")
		}
		if !errors.Is(err, client.ErrRateLimited) || errors.Is(err, client.ErrNotLeader) {
			t.Fatalf("Dial = %v, want client.ErrRateLimited (and not ErrNotLeader)", err)
		}
		if got := metric(t, c.leader(t), "zraft_sessions_refused_total", "reason", "rate"); got < 1 {
			t.Fatalf("zraft_sessions_refused_total{reason=rate} = %v, want at least 1", got)
		}
	})
}

// pipelineFrom sends n commands of payload on w as fast as it can, without
// waiting for replies, then collects the replies that arrive within
// waitTimeout (or until it has n) and counts them by outcome.
func pipelineFrom(t *testing.T, w *srcWire, n int, payload []byte) map[codec.Code]int {
	t.Helper()
	for i := 1; i <= n; i++ {
		if err := w.send(t, &codec.ClientRequest{RequestID: uint64(i), LowestPending: 1, Payload: payload}); err != nil {
			break // cut as a slow consumer, or the node's queue for it is full
		}
	}
	got := map[codec.Code]int{}
	total := 0
	for total < n {
		m, err := w.next(waitTimeout, kindIs(codec.KindClientResponse, codec.KindRequestError))
		if err != nil {
			break
		}
		total++
		if e, ok := m.(*codec.RequestError); ok {
			got[e.Reason]++
		} else {
			got[codec.CodeUnspecified]++ // answered: the command ran
		}
	}
	return got
}

// Issue 10, row 5: sessions sending 1 MiB commands without waiting for
// replies took the leader to 2.7–4.35 GB, and the Raft log kept the values
// kv would refuse (≈ 1.1–1.6 GB per member). kv declares its largest
// command (fsm.CommandSizer), so each such command is answered TooLarge
// before anything is proposed; with an application that accepts them, the
// session's bytes in flight (max_session_bytes) answer Overloaded before
// anything is proposed.
func TestHostileLargeCommands(t *testing.T) {
	// Short: 2 × 20 MiB (under -race, reading a 1 MiB frame costs the
	// node tens of milliseconds of CPU); full: the 8 × 1,500.
	sessions, commands := 2, 20
	if *hostileFull {
		sessions, commands = 8, 1500
	}
	payload := kv.EncodeSet("big", make([]byte, 1<<20-64))
	t.Run("kv refuses by size", func(t *testing.T) {
		c := startAppCluster(t, func(cfg *node.Config) { cfg.SessionTimeout = time.Minute }, kvApp)
		leader := c.leader(t)
		stop := make(chan struct{})
		errs := probe(c, 300*time.Millisecond, stop)
		tooLarge := 0
		for range sessions {
			w := dialFrom(t, leader.ClientAddr())
			if m, ok := w.createSession(t).(*codec.SessionRejected); ok {
				t.Fatalf("attacker session refused: %v %s", m.Reason, m.Message)
			}
			got := pipelineFrom(t, w, commands, payload)
			// TooLarge, or Overloaded while the session's frames wait
			// past max_session_bytes: nothing reaches the log.
			if got[codec.CodeTooLarge] == 0 || got[codec.CodeTooLarge]+got[codec.CodeOverloaded] != commands {
				t.Fatalf("replies to %d commands of 1 MiB: %v, want TooLarge (or Overloaded) for each", commands, got)
			}
			tooLarge += got[codec.CodeTooLarge]
		}
		close(stop)
		if err := <-errs; err != nil {
			t.Fatalf("well-behaved client not served during the attack: %v", err)
		}
		if got := metric(t, leader, "zraft_requests_refused_total", "reason", "command_size"); got < float64(tooLarge) {
			t.Fatalf("zraft_requests_refused_total{reason=command_size} = %v, want at least %d", got, tooLarge)
		}
		checkAlive(t, c)
		m := checkMemory(t)
		t.Logf("%d sessions × %d commands of 1 MiB: %d answered TooLarge, none proposed; probes all served; process RSS %d MiB",
			sessions, commands, tooLarge, m>>20)
	})
	t.Run("session bytes", func(t *testing.T) {
		// An application that takes any command (the counter), so the
		// commands admitted are replicated: short, commands of 100 KiB at
		// max_session_bytes 128 KiB (under -race a Raft entry of 1 MiB
		// takes the loaded CI machine long enough to delay the probe's
		// own entries behind it); full, 1 MiB at 2 MiB.
		// The full run sends 50 per session, not 1,500: every command
		// admitted is replicated, and these in-memory test clusters hold
		// their Raft logs in RAM (a node writes them to disk).
		size, budget, commands := 100<<10, 128<<10, commands
		if *hostileFull {
			size, budget, commands = 1<<20-64, 2<<20, 50
		}
		c := startCluster(t, func(cfg *node.Config) {
			cfg.SessionTimeout = time.Minute
			cfg.MaxPayload = max(cfg.MaxPayload, size)
			cfg.MaxPayload = min(cfg.MaxPayload, budget)
			cfg.MaxSessionBytes = budget
		})
		leader := c.leader(t)
		stop := make(chan struct{})
		errs := probe(c, 300*time.Millisecond, stop)
		overloaded, ran := 0, 0
		for range sessions {
			w := dialFrom(t, leader.ClientAddr())
			if m, ok := w.createSession(t).(*codec.SessionRejected); ok {
				t.Fatalf("attacker session refused: %v %s", m.Reason, m.Message)
			}
			got := pipelineFrom(t, w, commands, make([]byte, size))
			overloaded += got[codec.CodeOverloaded]
			ran += got[codec.CodeUnspecified]
		}
		close(stop)
		if err := <-errs; err != nil {
			t.Fatalf("well-behaved client not served during the attack: %v", err)
		}
		if overloaded == 0 {
			t.Fatalf("no command answered Overloaded at max_session_bytes (%d ran)", ran)
		}
		if got := metric(t, leader, "zraft_requests_refused_total", "reason", "session_bytes"); got < float64(overloaded) {
			t.Fatalf("zraft_requests_refused_total{reason=session_bytes} = %v, want at least %d", got, overloaded)
		}
		if got := metric(t, leader, "zraft_proposal_bytes_in_flight"); got != 0 {
			t.Fatalf("zraft_proposal_bytes_in_flight = %v after every command was answered, want 0", got)
		}
		checkAlive(t, c)
		m := checkMemory(t)
		t.Logf("%d sessions × %d commands of %d KiB at max_session_bytes %d KiB: %d ran, %d answered Overloaded; probes all served; process RSS %d MiB",
			sessions, commands, size>>10, budget>>10, ran, overloaded, m>>20)
	})
}

// Issue 10, row 8: 1 GiB of kv values took 1.8–2.4 GB per member, with no
// total quota (the limits allowed ≈ 64 GiB per replica). The replicated
// state now has a quota (quota_bytes): past it writes that grow the store
// get QuotaExceeded (kv.ErrQuotaExceeded, client.ErrQuotaExceeded), while
// reads, deletes, rewrites that do not grow it and new sessions keep
// working, like etcd's NOSPACE alarm.
func TestHostileQuota(t *testing.T) {
	quota := int64(4 << 20)
	if *hostileFull {
		quota = 128 << 20
	}
	c := startAppCluster(t, func(cfg *node.Config) { cfg.QuotaBytes = quota }, kvApp)
	leader := c.leader(t)
	if err := probeOnce(c); err != nil { // the probe's key exists before the store fills
		t.Fatalf("before the attack: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn := dialClient(t, c)
	kvc := kv.NewClient(conn)
	stop := make(chan struct{})
	errs := probe(c, 300*time.Millisecond, stop)
	value := make([]byte, 64<<10)
	// stored counts as kv does: key, value and 64 bytes per key.
	const key = "fill-000000"
	entry := int64(len(key) + len(value) + 64)
	stored := int64(len("probe") + 1 + 64)
	var written int64
	var err error
	for i := 0; int64(i) < 2*quota/int64(len(value)); i++ {
		if _, err = kvc.Set(ctx, fmt.Sprintf("fill-%06d", i), value); err != nil {
			break
		}
		written += int64(len(value))
		stored += entry
	}
	if !errors.Is(err, kv.ErrQuotaExceeded) || !errors.Is(err, client.ErrQuotaExceeded) {
		t.Fatalf("writing past the quota: %v after %d MiB, want kv.ErrQuotaExceeded and client.ErrQuotaExceeded", err, written>>20)
	}
	if stored > quota || stored+entry <= quota {
		t.Fatalf("refused with %d bytes stored (one more value: %d), quota %d", stored, stored+entry, quota)
	}
	if _, err := kvc.Get(ctx, "fill-000001"); err != nil {
		t.Fatalf("get at the quota: %v", err)
	}
	if _, err := kvc.Set(ctx, "fill-000002", value[:10]); err != nil {
		t.Fatalf("shrinking a value at the quota: %v", err)
	}
	if _, err := kvc.Delete(ctx, "fill-000003"); err != nil {
		t.Fatalf("delete at the quota: %v", err)
	}
	if _, err := kvc.Set(ctx, "after-delete", value[:1000]); err != nil {
		t.Fatalf("set after freeing space: %v", err)
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Fatalf("well-behaved client not served at the quota: %v", err)
	}
	used := metric(t, leader, "zraft_state_bytes")
	if used > float64(quota) || used < float64(quota-4*int64(len(value))) {
		t.Fatalf("zraft_state_bytes = %v, quota %d", used, quota)
	}
	if got := metric(t, leader, "zraft_quota_bytes"); got != float64(quota) {
		t.Fatalf("zraft_quota_bytes = %v, want %d", got, quota)
	}
	checkAlive(t, c)
	m := checkMemory(t)
	t.Logf("quota %d MiB: refused QuotaExceeded after %d MiB of 64 KiB values; get, delete, shrink and probes served; state %v bytes; process RSS %d MiB",
		quota>>20, written>>20, used, m>>20)
}

// serverRequestIDs drains w until it stays quiet for quiet and returns the
// distinct server request ids it received.
func serverRequestIDs(w *srcWire, quiet time.Duration) map[uint64]bool {
	ids := map[uint64]bool{}
	for {
		m, err := w.next(quiet, kindIs(codec.KindServerRequest))
		if err != nil {
			return ids
		}
		ids[m.(*codec.ServerRequest).RequestID] = true
	}
}

// Issue 10, row 7: watchers that never acknowledged were sent every
// notification at once, and again on each redelivery tick (2.3–2.7 GB on
// the leader for 60 watchers and 300 writes of 64 KiB). A session now has
// at most the client's window (64) of server requests unacknowledged on the
// wire; the rest wait in the replicated state and are sent as the client
// acknowledges. (kv watches no longer use server requests, docs/kv.md §6:
// each session here queues its server requests with the counter
// application's emit instead of watching a written key.)
func TestHostileWatchersNeverAcknowledge(t *testing.T) {
	watchers, writes, size := 6, 100, 16<<10
	if *hostileFull {
		watchers, writes, size = 60, 300, 64<<10
	}
	const window = 64
	c := startCluster(t, func(cfg *node.Config) {
		// The watchers send no keep-alives; the full run takes minutes.
		cfg.SessionTimeout = 10 * time.Minute
		// Redeliveries repeat ids already counted; a long interval lets
		// each watcher's connection fall quiet soon after the writes.
		cfg.RedeliverInterval = 5 * time.Second
	})
	leader := c.leader(t)
	ws := make([]*srcWire, watchers)
	for i := range ws {
		ws[i] = dialFrom(t, leader.ClientAddr())
		if _, ok := ws[i].createSession(t).(*codec.SessionCreated); !ok {
			t.Fatal("watcher session refused")
		}
	}
	stop := make(chan struct{})
	errs := probe(c, 300*time.Millisecond, stop)
	for i := range ws {
		emit := []byte(fmt.Sprintf("emit:%d:%d", writes, size))
		// Not waited for: the answer and the server requests come in
		// either order, and waiting for one would drop the others.
		if err := ws[i].send(t, &codec.ClientRequest{RequestID: 1, LowestPending: 1, Payload: emit}); err != nil {
			t.Fatal(err)
		}
	}
	for i, w := range ws {
		first, err := w.next(waitTimeout, kindIs(codec.KindServerRequest))
		if err != nil {
			t.Fatalf("watcher %d: no server request: %v", i, err)
		}
		ids := serverRequestIDs(w, 500*time.Millisecond)
		ids[first.(*codec.ServerRequest).RequestID] = true
		if len(ids) != window {
			t.Fatalf("watcher %d received %d distinct notifications without acknowledging, want the window of %d", i, len(ids), window)
		}
		for id := range ids {
			if id > window {
				t.Fatalf("watcher %d received id %d beyond the window", i, id)
			}
		}
	}
	// Acknowledging opens the window: the next ones come from the
	// replicated state.
	if err := ws[0].send(t, &codec.ServerRequestAck{RequestID: window}); err != nil {
		t.Fatal(err)
	}
	got := serverRequestIDs(ws[0], 500*time.Millisecond)
	more := 0
	for id := range got {
		if id > 2*window {
			t.Fatalf("after acknowledging %d: id %d beyond the new window", window, id)
		}
		if id > window {
			more++
		}
	}
	want := min(writes, 2*window) - window
	if more != want {
		t.Fatalf("after acknowledging %d: %d more notifications, want %d", window, more, want)
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Fatalf("well-behaved client not served during the attack: %v", err)
	}
	if got := metric(t, leader, "zraft_client_slow_consumers_total"); got != 0 {
		t.Fatalf("%v watchers cut as slow consumers: the window should keep them under send_queue_bytes", got)
	}
	checkAlive(t, c)
	m := checkMemory(t)
	t.Logf("%d watchers that never acknowledge, %d writes of %d KiB: each got the window of %d, the next %d after acknowledging; probes all served; redeliveries %v; process RSS %d MiB",
		watchers, writes, size>>10, window, want, metric(t, leader, "zraft_server_request_redeliveries_total"), m>>20)
}
