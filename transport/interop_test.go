package transport

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// python is Debian's interpreter, which has python3-zmq (libzmq 4.3); the
// python3 first on PATH may be another installation without it.
const python = "/usr/bin/python3"

// requireLibzmq skips the test when libzmq's Python binding is missing,
// unless CI is set: CI must run the interop tests, so there it fails.
func requireLibzmq(t *testing.T) {
	t.Helper()
	out, err := exec.Command(python, "-c", "import zmq; print(zmq.zmq_version())").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("%s cannot import zmq (install python3-zmq): %v: %s", python, err, out)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// dealerScript is a libzmq DEALER: it sends frames of several sizes and a
// multi-part message, expects exactly the single-frame echoes back, then
// idles long enough for libzmq heartbeats to need our PONGs (a missed PONG
// makes libzmq drop the connection and reconnect, which the test detects as
// a second Opened).
const dealerScript = `
import sys, time, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.setsockopt(zmq.RCVTIMEO, 15000)
s.setsockopt(zmq.IDENTITY, b"py-dealer")
s.setsockopt(zmq.HEARTBEAT_IVL, 20)
s.setsockopt(zmq.HEARTBEAT_TIMEOUT, 100)
s.connect("tcp://" + sys.argv[1])
sizes = [0, 1, 255, 256, 70000]
for i, n in enumerate(sizes):
    s.send(bytes([i + 1]) * n)
s.send_multipart([b"multi", b"part"])
for i, n in enumerate(sizes):
    got = s.recv()
    if got != bytes([i + 1]) * n:
        print("mismatch at", i, len(got))
        sys.exit(1)
time.sleep(0.5)
s.send(b"last")
if s.recv() != b"last":
    sys.exit(1)
print("ok")
`

func TestInteropLibzmqDealer(t *testing.T) {
	requireLibzmq(t)
	h := newRecorder(true)
	r := listen(t, smallRouterConfig(), h)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", dealerScript, r.Addr().String()).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("libzmq dealer: %v\n%s", err, out)
	}
	if n := len(h.openedIDs()); n != 1 {
		t.Fatalf("Opened %d times, want 1 (libzmq reconnected: PINGs not answered?)", n)
	}
	st := r.Stats()
	if st.MultipartDropped != 1 || st.MsgsIn != 6 || st.ProtocolErrors != 0 {
		t.Fatalf("stats = %+v, want 1 multipart dropped, 6 messages, no protocol errors", st)
	}
}

// routerScript is a libzmq ROUTER echoing argv[1] messages to whoever sent
// them; it prints its port first.
const routerScript = `
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.LINGER, 1000)
s.setsockopt(zmq.RCVTIMEO, 15000)
port = s.bind_to_random_port("tcp://127.0.0.1")
print(port, flush=True)
for _ in range(int(sys.argv[1])):
    ident, msg = s.recv_multipart()
    s.send_multipart([ident, msg])
`

func TestInteropLibzmqRouter(t *testing.T) {
	requireLibzmq(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	sizes := []int{0, 1, 255, 256, 70000}
	cmd := exec.CommandContext(ctx, python, "-c", routerScript, fmt.Sprint(len(sizes)))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	port, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("reading port: %v (%s)", err, stderr.String())
	}
	c := dial(t, "tcp://127.0.0.1:"+strings.TrimSpace(port), DefaultDialConfig())
	for i, n := range sizes {
		if err := c.Send(bytes.Repeat([]byte{byte(i + 1)}, n)); err != nil {
			t.Fatal(err)
		}
	}
	for i, n := range sizes {
		if got := recv(t, c); !bytes.Equal(got, bytes.Repeat([]byte{byte(i + 1)}, n)) {
			t.Fatalf("echo %d: %d bytes, want %d", i, len(got), n)
		}
	}
}
