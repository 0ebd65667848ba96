package raftnet

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// feed writes b to one end of a pipe and returns the other.
func feed(t *testing.T, b []byte) net.Conn {
	t.Helper()
	a, z := net.Pipe()
	go func() {
		_, _ = a.Write(b)
		_ = a.Close()
	}()
	t.Cleanup(func() { _ = z.Close() })
	return z
}

func TestFrameRoundTripAcrossPieces(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 3*pieceSize/16+7) // > 3 pieces
	c := feed(t, EncodeFrame(MethodRaft, payload, uint64(len(payload))))
	if err := readMagic(c, time.Second); err != nil {
		t.Fatal(err)
	}
	scratch := make([]byte, 0, 64)
	h, got, err := readFrame(c, 1<<30, time.Second, scratch)
	if err != nil || h.method != MethodRaft || !bytes.Equal(got, payload) {
		t.Fatalf("round trip: %v, method %d, %d bytes", err, h.method, len(got))
	}
	// A small frame reuses the scratch buffer.
	small := []byte("tiny")
	c = feed(t, EncodeFrame(MethodSnapshot, small, uint64(len(small))))
	_ = readMagic(c, time.Second)
	_, got, err = readFrame(c, 1<<30, time.Second, scratch)
	if err != nil || !bytes.Equal(got, small) || &got[0] != &scratch[:1][0] {
		t.Fatalf("small frame: %v %q (scratch reused: %v)", err, got, err == nil && &got[0] == &scratch[:1][0])
	}
}

func TestBadFramesAreRefusedBeforeAllocation(t *testing.T) {
	for name, tc := range map[string]struct {
		frame []byte
		want  error
	}{
		"announces 2^62":  {EncodeFrame(MethodRaft, nil, 1<<62), errTooLarge},
		"announces 1 TiB": {EncodeFrame(MethodRaft, nil, 1<<40), errTooLarge},
		"empty":           {EncodeFrame(MethodRaft, nil, 0), errBadHeader},
		"unknown method":  {EncodeFrame(7, []byte("x"), 1), errBadHeader},
		"header checksum": {func() []byte { b := EncodeFrame(MethodRaft, []byte("x"), 1); b[5] ^= 1; return b }(), errBadHeader},
		"payload checksum": {func() []byte {
			b := EncodeFrame(MethodRaft, []byte("xy"), 2)
			b[len(b)-1] ^= 1
			return b
		}(), errBadCRC},
	} {
		c := feed(t, tc.frame)
		if err := readMagic(c, time.Second); err != nil {
			t.Fatalf("%s: magic: %v", name, err)
		}
		if _, _, err := readFrame(c, 64<<20, time.Second, nil); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	if err := readMagic(feed(t, []byte{0, 0}), time.Second); !errors.Is(err, errPoison) {
		t.Errorf("poison: %v", err)
	}
	if err := readMagic(feed(t, []byte("GET / HTTP/1.1\r\n")), time.Second); !errors.Is(err, errBadMagic) {
		t.Errorf("not a frame: %v", err)
	}
}
