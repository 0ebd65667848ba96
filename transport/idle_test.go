package transport

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The idle-connection measurements run the clients in a child process (this
// test binary again, selected by idleClientsEnv), so that the parent's heap
// and stacks hold only the Router's side of each connection.
const idleClientsEnv = "ZRAFT_TRANSPORT_IDLE_CLIENTS"

// TestIdleClientsHelper is the child: it dials the requested connections,
// sends one frame on each, prints "ready" and holds them until its stdin
// closes. It does nothing in a normal run.
func TestIdleClientsHelper(t *testing.T) {
	spec := os.Getenv(idleClientsEnv)
	if spec == "" {
		t.Skip("helper process only")
	}
	addr, nstr, _ := strings.Cut(spec, ",")
	n, err := strconv.Atoi(nstr)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	cfg := DefaultDialConfig()
	cfg.Linger = 0
	for range n {
		c, err := Dial(context.Background(), addr, cfg)
		if err != nil {
			fmt.Println("error", err)
			return
		}
		conns = append(conns, c)
		// One small frame each way, as a session's first keep-alive: the
		// server's buffers have been used once and must be let go.
		if err := c.Send([]byte("ka")); err != nil {
			fmt.Println("error", err)
			return
		}
		if _, err := c.Recv(); err != nil {
			fmt.Println("error", err)
			return
		}
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
}

// countingEcho echoes every frame and counts opened connections.
type countingEcho struct {
	r      atomic.Pointer[Router]
	opened atomic.Int64
}

func (h *countingEcho) Opened(ConnID, net.Addr)          { h.opened.Add(1) }
func (h *countingEcho) Closed(ConnID, error)             {}
func (h *countingEcho) Received(id ConnID, frame []byte) { _ = h.r.Load().Send(id, frame) }

// idleCost opens n connections from a child process, each having sent and
// received one small frame, and returns the Router process's heap and stack
// bytes and goroutines per connection once they are idle, with the poller
// on or off.
func idleCost(tb testing.TB, n int, poller bool) (heapPer, stackPer, goroutinesPer float64) {
	tb.Helper()
	h := &countingEcho{}
	cfg := DefaultRouterConfig()
	cfg.Poller = poller
	cfg.MaxConnsPerSource = n + 1
	cfg.MaxHandshakesPerSource = cfg.MaxHandshakes
	r, err := Listen(cfg, h)
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	h.r.Store(r)

	before := settledMem()
	goroutinesBefore := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestIdleClientsHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), idleClientsEnv+"="+r.Addr().String()+","+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		tb.Fatalf("client process: %q %v", line, err)
	}
	if got := h.opened.Load(); got != int64(n) {
		tb.Fatalf("%d connections opened, want %d", got, n)
	}
	after := settledMem()
	goroutinesAfter := runtime.NumGoroutine()
	if a := r.Stats().Active; a != int64(n) {
		tb.Fatalf("%d connections active, want %d", a, n)
	}
	heapPer = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
	stackPer = float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n)
	goroutinesPer = float64(goroutinesAfter-goroutinesBefore) / float64(n)
	return heapPer, stackPer, goroutinesPer
}

// settledMem collects garbage until the heap stops shrinking (stacks are
// shrunk by the collector too) and returns the memory statistics.
func settledMem() runtime.MemStats {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	runtime.ReadMemStats(&m)
	return m
}

// TestIdleConnectionCost checks that an idle connection that has carried a
// small frame each way costs the Router little: buffers and queues are let
// go while it is idle. The bound is generous (the target is 2 KiB of heap);
// the old design (a 1,024-slot queue channel and 12 KiB of buffers per
// connection, two goroutines) cost about 40 KiB.
func TestIdleConnectionCost(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	const n = 1000
	heapPer, stackPer, gPer := idleCost(t, n, testPoller)
	t.Logf("%s: idle connection: %.0f heap bytes + %.0f stack bytes, %.3f goroutines", mode(), heapPer, stackPer, gPer)
	if heapPer > 4096 {
		t.Errorf("idle connection holds %.0f heap bytes, want at most 4096", heapPer)
	}
	if heapPer+stackPer > 12288 {
		t.Errorf("idle connection holds %.0f heap + %.0f stack bytes, want at most 12288 together", heapPer, stackPer)
	}
}

// TestIdleConnectionCostPolled checks that with the poller an idle
// connection has no goroutine of its own (the reader goroutine ends when the
// connection is parked) and costs the Router well under what the goroutine
// reader costs: at most 3 KiB of heap and stack together, where a reader
// goroutine's stack alone is about 4 KiB (with Poller off this test fails
// on both counts: 1 goroutine and about 5.3 KiB per connection).
func TestIdleConnectionCostPolled(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	if !pollerSupported {
		t.Skip("no poller on this system")
	}
	if !testPoller {
		t.Skip("measured once, in the poller run")
	}
	const n = 1000
	heapPer, stackPer, gPer := idleCost(t, n, true)
	t.Logf("poller: idle connection: %.0f heap bytes + %.0f stack bytes, %.3f goroutines", heapPer, stackPer, gPer)
	if gPer >= 0.1 {
		t.Errorf("%.3f goroutines per idle connection, want < 0.1", gPer)
	}
	if heapPer+stackPer > 3072 {
		t.Errorf("idle connection holds %.0f heap + %.0f stack bytes, want at most 3072 together", heapPer, stackPer)
	}
}

// BenchmarkIdleConnections reports the heap and stack bytes and the
// goroutines the Router holds per idle connection, with 2,000 connections
// open, with the poller and with a reader goroutine per connection.
func BenchmarkIdleConnections(b *testing.B) {
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) {
			for range b.N {
				heapPer, stackPer, gPer := idleCost(b, 2000, m.poller)
				b.ReportMetric(heapPer, "heap-B/conn")
				b.ReportMetric(stackPer, "stack-B/conn")
				b.ReportMetric(gPer, "goroutines/conn")
			}
		})
	}
}
