package actors

import (
	"testing"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/zraft/zraft/codec"
)

// Issue 10: the inbox was bounded only in frames (65,536 of up to 4 MiB
// each); it is now bounded in bytes as well. Frames past the byte budget
// are dropped and counted; releasing them makes room again.
func TestInboxBoundedInBytes(t *testing.T) {
	sys := quietSystem()
	got := make(chan *Inbound, 16)
	sessions := sys.Root.Spawn(actor.PropsFromFunc(func(c actor.Context) {
		if m, ok := c.Message().(*Inbound); ok {
			got <- m // not released: the frames stay admitted
		}
	}))
	defer sys.Root.Stop(sessions)
	env := &Env{Settings: Settings{Limits: codec.DefaultLimits()}, Metrics: NewMetrics(nil), Refs: Refs{Sessions: sessions}}
	frame, err := codec.Encode(&codec.Query{CorrelationID: 1, Payload: make([]byte, 1000)})
	if err != nil {
		t.Fatal(err)
	}
	in := NewInbox(sys, env, 100, int64(3*len(frame)))
	for range 5 {
		in.Received(1, frame)
	}
	if f, b := in.Pending(); f != 3 || b != int64(3*len(frame)) {
		t.Fatalf("pending %d frames, %d bytes; want 3 frames of %d bytes", f, b, len(frame))
	}
	var first *Inbound
	for range 3 {
		first = <-got
	}
	in.handled(first.size)
	in.Received(1, frame)
	if f, _ := in.Pending(); f != 3 {
		t.Fatalf("after one release %d frames pending, want 3 (one admitted again)", f)
	}
}
