package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchMsgSize is the payload of every benchmark message.
const benchMsgSize = 100

// benchWindow bounds messages in flight in the pipelined benchmarks; it is
// below both send queues, so Send never meets a full queue.
const benchWindow = 256

// echoHandler echoes every frame back without recording anything.
type echoHandler struct{ r atomic.Pointer[Router] }

func (h *echoHandler) Opened(ConnID, net.Addr)          {}
func (h *echoHandler) Closed(ConnID, error)             {}
func (h *echoHandler) Received(id ConnID, frame []byte) { _ = h.r.Load().Send(id, frame) }

// benchMode is a reading path the benchmarks run with.
type benchMode struct {
	name   string
	poller bool
}

// benchModes are the reading paths to compare: the poller (where
// supported) and a reader goroutine per connection.
func benchModes() []benchMode {
	modes := []benchMode{{"goroutine", false}}
	if pollerSupported {
		modes = append([]benchMode{{"poller", true}}, modes...)
	}
	return modes
}

func benchTransport(b *testing.B, poller bool) (*Conn, func()) {
	b.Helper()
	h := &echoHandler{}
	cfg := DefaultRouterConfig()
	cfg.Poller = poller
	r, err := Listen(cfg, h)
	if err != nil {
		b.Fatal(err)
	}
	h.r.Store(r)
	c, err := Dial(context.Background(), r.Addr().String(), DefaultDialConfig())
	if err != nil {
		b.Fatal(err)
	}
	return c, func() { _ = c.Close(); _ = r.Close() }
}

// rawConn is the floor: length-prefixed frames over a bufio'd TCP socket,
// with an echo server that flushes when its input buffer is empty.
type rawConn struct {
	nc net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func benchRaw(b *testing.B) (*rawConn, func()) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br, bw := bufio.NewReaderSize(nc, readBufferSize), bufio.NewWriterSize(nc, writeBufferSize)
		for {
			body, err := readRaw(br)
			if err != nil {
				return
			}
			writeRaw(bw, body)
			if br.Buffered() == 0 && bw.Flush() != nil {
				return
			}
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	rc := &rawConn{nc: nc, br: bufio.NewReaderSize(nc, readBufferSize), bw: bufio.NewWriterSize(nc, writeBufferSize)}
	return rc, func() { _ = nc.Close(); _ = ln.Close(); wg.Wait() }
}

func writeRaw(bw *bufio.Writer, body []byte) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)))
	_, _ = bw.Write(hdr[:])
	_, _ = bw.Write(body)
}

func readRaw(br *bufio.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(br, body)
	return body, err
}

// BenchmarkRoundTrip measures one request/reply at a time, through the
// transport and over raw buffered TCP, in the same run. Metrics:
// zraft-ns/rtt, raw-ns/rtt and raw/zraft (the fraction of raw speed).
// Sub-benchmarks: the Router with the poller and with a reader goroutine
// per connection.
func BenchmarkRoundTrip(b *testing.B) {
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) { benchRoundTrip(b, m.poller) })
	}
}

func benchRoundTrip(b *testing.B, poller bool) {
	msg := make([]byte, benchMsgSize)
	c, stop := benchTransport(b, poller)
	defer stop()
	rc, stopRaw := benchRaw(b)
	defer stopRaw()
	b.ResetTimer()

	start := time.Now()
	for range b.N {
		if err := c.Send(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Recv(); err != nil {
			b.Fatal(err)
		}
	}
	zraft := time.Since(start)

	start = time.Now()
	for range b.N {
		writeRaw(rc.bw, msg)
		if err := rc.bw.Flush(); err != nil {
			b.Fatal(err)
		}
		if _, err := readRaw(rc.br); err != nil {
			b.Fatal(err)
		}
	}
	raw := time.Since(start)

	b.ReportMetric(float64(zraft.Nanoseconds())/float64(b.N), "zraft-ns/rtt")
	b.ReportMetric(float64(raw.Nanoseconds())/float64(b.N), "raw-ns/rtt")
	b.ReportMetric(float64(raw)/float64(zraft), "raw/zraft")
}

// BenchmarkPipelinedEcho measures echo throughput with benchWindow messages
// in flight, through the transport and over raw buffered TCP, in the same
// run. Metrics: zraft-msg/s, raw-msg/s and zraft/raw (target >= 0.10).
// BenchmarkRoundTripAfterIdle measures a request/reply that follows a
// pause longer than the poller's longest linger, as a keep-alive does: with the
// poller every one parks the connection and wakes it through epoll. The
// pause is not timed.
func BenchmarkRoundTripAfterIdle(b *testing.B) {
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) {
			msg := make([]byte, benchMsgSize)
			c, stop := benchTransport(b, m.poller)
			defer stop()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				time.Sleep(pollLingerMax + time.Millisecond)
				b.StartTimer()
				if err := c.Send(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Recv(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkManyConnections measures round trips on 500 connections at once,
// one request in flight on each: every connection waits longer than the
// poller's linger between its messages (about 500 × 30 µs / 2 cores), so
// with the poller every message wakes its connection through epoll, as
// keep-alives from many sessions do. Metric: msg/s, all connections
// together.
func BenchmarkManyConnections(b *testing.B) {
	const conns = 500
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) {
			h := &echoHandler{}
			cfg := DefaultRouterConfig()
			cfg.Poller = m.poller
			r, err := Listen(cfg, h)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			h.r.Store(r)
			cs := make([]*Conn, conns)
			for i := range cs {
				if cs[i], err = Dial(context.Background(), r.Addr().String(), DefaultDialConfig()); err != nil {
					b.Fatal(err)
				}
				defer cs[i].Close()
			}
			msg := make([]byte, benchMsgSize)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			errc := make(chan error, conns)
			for i, c := range cs {
				n := b.N / conns
				if i < b.N%conns {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range n {
						if err := c.Send(msg); err != nil {
							errc <- err
							return
						}
						if _, err := c.Recv(); err != nil {
							errc <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
			close(errc)
			for err := range errc {
				b.Fatal(err)
			}
		})
	}
}

// Sub-benchmarks as BenchmarkRoundTrip.
func BenchmarkPipelinedEcho(b *testing.B) {
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) { benchPipelinedEcho(b, m.poller) })
	}
}

func benchPipelinedEcho(b *testing.B, poller bool) {
	msg := make([]byte, benchMsgSize)
	c, stop := benchTransport(b, poller)
	defer stop()
	rc, stopRaw := benchRaw(b)
	defer stopRaw()
	b.ResetTimer()

	start := time.Now()
	pipeline(b, b.N, func() error {
		for {
			err := c.Send(msg)
			if !errors.Is(err, ErrQueueFull) {
				return err
			}
			runtime.Gosched()
		}
	}, func() error { return nil }, func() error {
		_, err := c.Recv()
		return err
	})
	zraft := time.Since(start)

	start = time.Now()
	pipeline(b, b.N, func() error {
		writeRaw(rc.bw, msg)
		return nil
	}, rc.bw.Flush, func() error {
		_, err := readRaw(rc.br)
		return err
	})
	raw := time.Since(start)

	zps := float64(b.N) / zraft.Seconds()
	rps := float64(b.N) / raw.Seconds()
	b.ReportMetric(zps, "zraft-msg/s")
	b.ReportMetric(rps, "raw-msg/s")
	b.ReportMetric(zps/rps, "zraft/raw")
}

// pipeline sends n messages from one goroutine and receives n echoes on the
// calling one, with at most benchWindow in flight. flush is called whenever
// the sender must wait for the window.
func pipeline(b *testing.B, n int, send, flush, recv func() error) {
	b.Helper()
	window := make(chan struct{}, benchWindow)
	errc := make(chan error, 1)
	go func() {
		for range n {
			select {
			case window <- struct{}{}:
			default:
				if err := flush(); err != nil {
					errc <- err
					return
				}
				window <- struct{}{}
			}
			if err := send(); err != nil {
				errc <- err
				return
			}
		}
		errc <- flush()
	}()
	for range n {
		if err := recv(); err != nil {
			b.Fatal(err)
		}
		<-window
	}
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}
