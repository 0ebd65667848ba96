package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"
)

func longHeader(flags byte, n uint64) []byte {
	h := make([]byte, 9)
	h[0] = flags | flagLong
	binary.BigEndian.PutUint64(h[1:], n)
	return h
}

// readAllGuarded drains stream through a guard, reading with the given
// reader wrapper, and returns how many bytes the guard let through.
func readAllGuarded(stream []byte, limit int, wrap func(io.Reader) io.Reader) (int, error) {
	g := &guard{r: bufio.NewReaderSize(wrap(bytes.NewReader(stream)), 16), limit: uint64(limit), greetLeft: greetingLen}
	buf := make([]byte, 7)
	total := 0
	for {
		n, err := g.Read(buf)
		total += n
		if err == io.EOF {
			if !g.atBoundary() {
				return total, io.ErrUnexpectedEOF
			}
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func TestGuard(t *testing.T) {
	ready := append([]byte{flagCommand, 6, 5}, "READY"...)
	longCmd := append(longHeader(flagCommand, 300), bytes.Repeat([]byte{'x'}, 300)...)
	empty := []byte{flagCommand, 0}
	tests := []struct {
		name   string
		stream []byte
		limit  int
		want   error
		// passMax bounds the bytes the guard may let through: for an
		// oversized frame, never the whole length field.
		passMax int
	}{
		{"greeting and READY", cat(greeting(), ready), 512, nil, -1},
		{"long command", cat(greeting(), ready, longCmd, empty), 512, nil, -1},
		{"huge long header", cat(greeting(), longHeader(flagCommand, 1<<62)), 512, ErrFrameTooLarge, greetingLen + 8},
		{"one over limit", cat(greeting(), longHeader(flagCommand, 513)), 512, ErrFrameTooLarge, greetingLen + 8},
		{"short over small limit", cat(greeting(), []byte{flagCommand, 200}), 100, ErrFrameTooLarge, greetingLen + 1},
		{"data frame", cat(greeting(), []byte{0, 1, 'a'}), 512, ErrProtocol, greetingLen},
		{"more flag", cat(greeting(), []byte{flagCommand | flagMore, 0}), 512, ErrProtocol, greetingLen},
		{"reserved bits", cat(greeting(), []byte{flagCommand | 0x10, 0}), 512, ErrProtocol, greetingLen},
	}
	wraps := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, tc := range tests {
		for wname, wrap := range wraps {
			t.Run(tc.name+"/"+wname, func(t *testing.T) {
				n, err := readAllGuarded(tc.stream, tc.limit, wrap)
				if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if tc.want == nil && n != len(tc.stream) {
					t.Fatalf("passed %d of %d bytes", n, len(tc.stream))
				}
				if tc.passMax >= 0 && n > tc.passMax {
					t.Fatalf("passed %d bytes, at most %d allowed before the violation", n, tc.passMax)
				}
			})
		}
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestReadMessage(t *testing.T) {
	tests := []struct {
		name   string
		stream []byte
		kinds  []msgKind
		bodies []string
		err    error
	}{
		{"short", []byte{0, 3, 'a', 'b', 'c'}, []msgKind{kindData}, []string{"abc"}, io.EOF},
		{"long form small body", cat(longHeader(0, 2), []byte("hi")), []msgKind{kindData}, []string{"hi"}, io.EOF},
		{"multipart then single", []byte{flagMore, 1, 'a', 0, 1, 'b', 0, 1, 'c'}, []msgKind{kindDropped, kindData}, []string{"", "c"}, io.EOF},
		{"command", append([]byte{flagCommand, 5, 4}, "PING"...), []msgKind{kindCommand}, []string{"\x04PING"}, io.EOF},
		{"cut in header", []byte{flagLong, 0, 0}, nil, nil, io.ErrUnexpectedEOF},
		{"cut in body", []byte{0, 5, 'a'}, nil, nil, io.ErrUnexpectedEOF},
		{"cut in multipart", []byte{flagMore, 1, 'a'}, nil, nil, io.ErrUnexpectedEOF},
		{"too large", longHeader(0, 1<<40), nil, nil, ErrFrameTooLarge},
		{"reserved", []byte{0x20, 0}, nil, nil, ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(iotest.OneByteReader(bytes.NewReader(tc.stream)))
			for i, want := range tc.kinds {
				body, kind, err := readMessage(br, 1024, nil)
				if err != nil || kind != want || string(body) != tc.bodies[i] {
					t.Fatalf("message %d = %q kind %d err %v, want %q kind %d", i, body, kind, err, tc.bodies[i], want)
				}
			}
			if _, _, err := readMessage(br, 1024, nil); !errors.Is(err, tc.err) {
				t.Fatalf("final err = %v, want %v", err, tc.err)
			}
		})
	}
}

func TestWriteFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	bodies := [][]byte{{}, []byte("x"), bytes.Repeat([]byte{1}, 255), bytes.Repeat([]byte{2}, 256)}
	for _, b := range bodies {
		if err := writeFrame(bw, 0, b); err != nil {
			t.Fatal(err)
		}
	}
	_ = bw.Flush()
	if got := buf.Bytes()[2+0+2+1+2+255]; got != flagLong {
		t.Fatalf("256-byte frame flags = %#x, want long form", got)
	}
	br := bufio.NewReader(&buf)
	for _, want := range bodies {
		got, kind, err := readMessage(br, 1024, nil)
		if err != nil || kind != kindData || !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes kind %d err %v, want %d bytes", len(got), kind, err, len(want))
		}
	}
}

// FuzzReadMessage checks that no input panics the data-path parser or
// yields a body over the limit.
func FuzzReadMessage(f *testing.F) {
	f.Add([]byte{0, 3, 'a', 'b', 'c'})
	f.Add([]byte{flagMore, 1, 'a', 0, 1, 'b'})
	f.Add(longHeader(0, 1<<62))
	f.Add(append([]byte{flagCommand, 5, 4}, "PING"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReader(bytes.NewReader(data))
		for range 64 {
			body, kind, err := readMessage(br, 600, nil)
			if err != nil {
				return
			}
			if len(body) > 600 {
				t.Fatalf("body of %d bytes over the limit", len(body))
			}
			if kind == kindCommand {
				_, _, _ = parseCommand(body)
			}
		}
	})
}

// FuzzGuard checks that the handshake guard never panics and never lets a
// complete oversized length through.
func FuzzGuard(f *testing.F) {
	f.Add(cat(greeting(), []byte{flagCommand, 6, 5}, []byte("READY")))
	f.Add(cat(greeting(), longHeader(flagCommand, 1<<62)))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = readAllGuarded(data, 512, iotest.OneByteReader)
	})
}

// TestAnnouncedSizeIsNotAllocatedAhead: a header announcing a frame at the
// limit, followed by a few bytes, costs about one readFree buffer, not the
// announced size (issue 10: 9-byte headers pinned 4 MiB each).
func TestAnnouncedSizeIsNotAllocatedAhead(t *testing.T) {
	const announced = 4 << 20
	stream := cat(longHeader(0, announced), []byte("only these bytes arrive"))
	br := bufio.NewReaderSize(bytes.NewReader(stream), 4096)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := readMessage(br, announced, nil)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readMessage = %v, want io.ErrUnexpectedEOF", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > announced/4 {
		t.Fatalf("a truncated %d-byte frame allocated %d bytes", announced, got)
	}
}

// TestLargeBodyArrivingInPieces: a body larger than readFree, delivered a
// little at a time, is read whole and exact.
func TestLargeBodyArrivingInPieces(t *testing.T) {
	for _, size := range []int{readFree, readFree + 1, 3*readFree + 7, 1 << 20} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		stream := cat(longHeader(0, uint64(size)), body)
		br := bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(stream)), 4096)
		got, kind, err := readMessage(br, 1<<20, nil)
		if err != nil || kind != kindData || !bytes.Equal(got, body) {
			t.Fatalf("size %d: readMessage = %d bytes, kind %v, %v", size, len(got), kind, err)
		}
	}
}
